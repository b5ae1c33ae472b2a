"""Browser action round trips through the browser tools (warm browser, local page).

Each figure is one ``await tool.call(...)`` as the agent loop makes it: the Playwright call, the
tab line of the result, and (for screenshots) JPEG capture + decode into an image part. Pages are
served from 127.0.0.1 so the network is not measured. Prints median / p95 in milliseconds and
the machine (nproc, CPU model, Chromium version).

    .venv/bin/python evals/perf/bench_browser.py [--iterations 40] [--guard]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omni_agent.machine import describe_machine  # noqa: E402

PAGE = b"""<!doctype html><html><head><title>Bench</title></head><body>
<h1>Bench</h1><input id="q" aria-label="Query"><button id="b" onclick="this.dataset.n=(+this.dataset.n||0)+1">Go</button>
<p>""" + b"Some paragraph text. " * 200 + b"""</p></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)


def _machine() -> str:
    try:
        chromium = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        chromium = "chromium version unknown"
    return describe_machine(chromium)


def _stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ms)})"


async def _bench(iterations: int, guard: bool) -> dict[str, list[float]]:
    from omni_agent.tool import ToolContext
    from omni_agent.tools.browser import BrowserConfig, BrowserSession, browser_tools

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    workspace = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    config = BrowserConfig(workspace=workspace, deny_domains=["blocked.example"] if guard else [])
    session = BrowserSession(config)
    tools = {t.name: t for t in browser_tools(session=session)}
    ctx = ToolContext(workspace=workspace)

    actions = {
        "goto": ("browser_goto", {"url": url}),
        "click (selector)": ("browser_click", {"selector": "#b"}),
        "click (x, y)": ("browser_click", {"x": 50, "y": 50}),
        "fill": ("browser_fill", {"selector": "#q", "value": "hello world"}),
        "read text": ("browser_read", {}),
        "screenshot (JPEG)": ("browser_screenshot", {}),
    }
    results: dict[str, list[float]] = {k: [] for k in actions}
    try:
        t0 = time.perf_counter()
        out = await tools["browser_goto"].call({"url": url}, ctx)
        results["cold start (launch + goto)"] = [time.perf_counter() - t0]
        if out.is_error:
            raise SystemExit(f"browser failed: {out.text}")
        for _ in range(3):  # warm-up
            for name, args in actions.values():
                await tools[name].call(args, ctx)
        for _ in range(iterations):
            for label, (name, args) in actions.items():
                t = time.perf_counter()
                out = await tools[name].call(args, ctx)
                results[label].append(time.perf_counter() - t)
                if out.is_error:
                    raise SystemExit(f"{label} failed: {out.text}")
    finally:
        await session.close()
        server.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--guard", action="store_true", help="with a deny list (request interception on)")
    args = parser.parse_args()
    results = asyncio.run(_bench(args.iterations, args.guard))
    print(f"machine: {_machine()}")
    print(f"browser tool round trips, headless, 1280x800, warm; request interception {'on' if args.guard else 'off'}")
    for label, samples in results.items():
        print(f"  {label:<28} {_stats(samples)}")


if __name__ == "__main__":
    main()
