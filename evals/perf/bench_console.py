"""Benchmark: the live console's screen stream and step events, measured in a real page.

    .venv/bin/python evals/perf/bench_console.py [--seconds 5] [--trials 20] [--steps 30]

Starts an Xvfb display at 1280x800 with a busy UI-like window (text rows, colours: a black
screen would make JPEG look free), a console on it (scripted model, real server on 127.0.0.1)
and Debian's Chromium (Playwright, headless) on the console page, then measures:

  fps        frames shown in the page per second while the screen changes continuously
             (a small window changes colour every 20 ms)
  latency    from a screen change (an X window painted, after XSync) to the page showing a
             frame with it (the image's load event; its pixel read back to be sure)
  events     from an agent event's creation (``AgentEvent.time``) to its arrival in the page,
             over a run of N scripted steps with a no-op tool

Targets (issue 13): >= 5 fps and <= 200 ms at 1280x800, events <= 50 ms, on the 2-core machine.
Figures are medians with p90, printed with the machine they came from.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omni_agent.console.server import ConsoleServer  # noqa: E402
from omni_agent.loop import Agent  # noqa: E402
from omni_agent.machine import describe_machine  # noqa: E402
from omni_agent.models.scripted import ScriptedModel  # noqa: E402
from omni_agent.tool import tool  # noqa: E402
from omni_agent.xvfb import VirtualDisplay  # noqa: E402

UI_APP = r"""
import sys, tkinter as tk, random
w, h = int(sys.argv[1]), int(sys.argv[2])
random.seed(1)
root = tk.Tk(); root.geometry(f"{w}x{h}+0+0")
c = tk.Canvas(root, width=w, height=h, bg="#f4f4f4", highlightthickness=0); c.pack()
c.create_rectangle(0, 0, w, 48, fill="#2b5797", outline="")
for y in range(70, h - 20, 26):
    x = 20
    while x < w - 200:
        word = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(2, 10)))
        c.create_text(x, y, text=word, anchor="w", font=("DejaVu Sans", 12), fill="#222")
        x += 12 * len(word) + 14
root.after(200, lambda: print("ready", flush=True))
root.mainloop()
"""

PROBE_JS = """() => {
  window.__probe = [];
  const img = document.querySelector('#screen');
  const c = document.createElement('canvas'); c.width = 1; c.height = 1; const g = c.getContext('2d', {willReadFrequently: true});
  img.addEventListener('load', () => {
    const t = performance.timeOrigin + performance.now();
    g.drawImage(img, img.naturalWidth / 2, img.naturalHeight / 2, 1, 1, 0, 0, 1, 1);
    const f = window.__console.frames[window.__console.frames.length - 1] || {};
    window.__probe.push({t, captured: f.captured * 1000, received: f.received, rgb: Array.from(g.getImageData(0, 0, 1, 1).data.slice(0, 3))});
  });
}"""


class Square:
    """A 240x240 override-redirect window at the screen's centre whose colour the bench sets."""

    def __init__(self, display: str, size: tuple[int, int]) -> None:
        from Xlib import X, display as xdisplay

        self.conn = xdisplay.Display(display)
        screen = self.conn.screen()
        w, h = size
        self.window = screen.root.create_window(
            w // 2 - 120, h // 2 - 120, 240, 240, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
            background_pixel=0, override_redirect=True,
        )  # fmt: skip
        self.window.map()
        self.conn.sync()

    def paint(self, rgb: tuple[int, int, int]) -> float:
        self.window.change_attributes(background_pixel=(rgb[0] << 16) | (rgb[1] << 8) | rgb[2])
        self.window.clear_area(0, 0, 240, 240)
        self.conn.sync()
        return time.time() * 1000

    def close(self) -> None:
        self.window.destroy()
        self.conn.close()


@tool
def noop(i: int) -> str:
    """Do nothing.

    Args:
        i: A number.
    """
    return f"ok {i}"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _fmt(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f} ms (p90 {_pct(values, 0.9):.0f} ms, n={len(values)})"


def measure_fps(page: Any, square: Square, seconds: float) -> float:
    stop = threading.Event()

    def animate() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            square.paint(((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
            time.sleep(0.02)

    thread = threading.Thread(target=animate, daemon=True)
    start_ms = time.time() * 1000
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    shown = page.evaluate("(t0) => window.__console.frames.filter((f) => f.shown >= t0).length", start_ms + 500)
    return shown / (seconds - 0.5)


def measure_latency(page: Any, square: Square, trials: int) -> tuple[list[float], dict[str, list[float]]]:
    """Change -> shown, and its parts: change -> grabbed, grabbed -> in the page, -> decoded and shown."""
    colours = [(230, 20, 20), (20, 200, 40)]
    out = []
    parts: dict[str, list[float]] = {"grab": [], "transfer": [], "decode": []}
    for i in range(trials):
        rgb = colours[i % 2]
        time.sleep(0.3)
        changed = square.paint(rgb)
        got = page.wait_for_function(
            """([t0, rgb]) => { const hit = window.__probe.find((p) => p.t >= t0 && p.rgb.every((v, k) => Math.abs(v - rgb[k]) < 40));
            return hit ? hit : null; }""",
            arg=[changed, list(rgb)], timeout=5000, polling=5,
        )  # fmt: skip
        hit = got.json_value()
        out.append(hit["t"] - changed)
        parts["grab"].append(hit["captured"] - changed)
        parts["transfer"].append(hit["received"] - hit["captured"])
        parts["decode"].append(hit["t"] - hit["received"])
    return out, parts


def measure_events(console: Any, page: Any, steps: int) -> list[float]:
    page.evaluate("() => { window.__console.eventTimes.length = 0; }")
    page.fill("#instruction", "benchmark")
    page.click("#run-btn")
    page.wait_for_selector(".answer", timeout=120_000)
    times = page.evaluate("() => window.__console.eventTimes")
    return [t["received"] - t["at"] for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    outputs = [f'<tool_call>{{"name": "noop", "arguments": {{"i": {i}}}}}</tool_call>' for i in range(args.steps)] + ["done"]
    with VirtualDisplay(width=1280, height=800) as vd, tempfile.TemporaryDirectory() as tmp:
        ui = subprocess.Popen([sys.executable, "-c", UI_APP, "1280", "800"], env=vd.env(), stdout=subprocess.PIPE, text=True)
        try:
            assert ui.stdout is not None and ui.stdout.readline().strip() == "ready"
            agent = Agent(ScriptedModel(outputs), [noop], trajectory_dir=Path(tmp) / "runs", max_steps=args.steps + 1, max_repeats=1000)
            console = ConsoleServer(agent, display=vd.display, runs_dir=Path(tmp) / "runs", speak=False).start_in_thread()
            square = Square(vd.display, vd.size)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.goto(console.url)
                page.wait_for_function("window.__console.frames.length > 0", timeout=10_000)
                page.evaluate(PROBE_JS)
                fps = measure_fps(page, square, args.seconds)
                latency, parts = measure_latency(page, square, args.trials)
                events = measure_events(console, page, args.steps)
                version = browser.version
                browser.close()
            square.close()
            console.stop_thread()
        finally:
            ui.terminate()
    print(f"machine: {describe_machine(f'Chromium {version}')}")
    print("console live screen at 1280x800 (JPEG q70, polled at 15/s, sent on change):")
    print(f"  fps while the screen changes: {fps:.1f} frames/s (target >= 5)")
    print(f"  screen change -> frame shown in the page: {_fmt(latency)} (target <= 200 ms)")
    for name, values in parts.items():
        print(f"    {name:9s} {_fmt(values)}")
    print(f"  step events, creation -> page ({args.steps} steps): {_fmt(events)} (target <= 50 ms)")


if __name__ == "__main__":
    main()
