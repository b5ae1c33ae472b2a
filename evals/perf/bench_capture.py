"""Benchmark: screen capture -> model-ready image, per stage, at 1280x800 and 1920x1080.

    .venv/bin/python evals/perf/bench_capture.py [--rounds 60]

Starts its own Xvfb per size with a busy UI-like window (text rows, buttons, colours: a black
screen would make JPEG look free), then times, per model spec:

  grab     mss (one reused instance) -> RGB PIL image          (ScreenCapture.grab)
  resize   model-side resize (bilinear; skipped when it fits)  (coords.resize_for_model)
  encode   JPEG q75 of the resized image                       (what an HTTP backend sends)
  total    the three together, as one call after another

Target: total under 15 ms at 1280x800 on the 2-core dev machine. Figures are medians (p90 in
brackets) and print with the machine they came from.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from omni_agent.coords import QWEN3_SPEC, QWEN25_SPEC, ModelImageSpec, resize_for_model  # noqa: E402
from omni_agent.screen import ScreenCapture  # noqa: E402
from omni_agent.machine import cpu_model  # noqa: E402
from omni_agent.xvfb import VirtualDisplay  # noqa: E402

UI_APP = r"""
import sys, tkinter as tk, random
w, h = int(sys.argv[1]), int(sys.argv[2])
random.seed(1)
root = tk.Tk(); root.geometry(f"{w}x{h}+0+0")
c = tk.Canvas(root, width=w, height=h, bg="#f4f4f4", highlightthickness=0); c.pack()
c.create_rectangle(0, 0, w, 48, fill="#2b5797", outline="")
c.create_text(20, 24, text="omni-agent benchmark window - File  Edit  View  Help", anchor="w", fill="white", font=("DejaVu Sans", 14))
for y in range(70, h - 20, 26):
    x = 20
    while x < w - 200:
        word = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(2, 10)))
        c.create_text(x, y, text=word, anchor="w", font=("DejaVu Sans", 12), fill="#222")
        x += 12 * len(word) + 14
    if random.random() < 0.2:
        c.create_rectangle(w - 180, y - 10, w - 40, y + 12, fill=random.choice(["#e74c3c", "#27ae60", "#f1c40f", "#8e44ad"]))
root.after(200, lambda: print("ready", flush=True))
root.mainloop()
"""

SPECS: dict[str, ModelImageSpec] = {
    "qwen3 (checkpoint bounds)": QWEN3_SPEC,
    "qwen3, max 1024 tokens": QWEN3_SPEC.model_copy(update={"max_pixels": 1024 * 32 * 32}),
    "qwen2.5, max 1280 tokens": QWEN25_SPEC.model_copy(update={"max_pixels": 1280 * 28 * 28}),
}




def ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"{statistics.median(ordered) * 1000:6.2f} [{p90 * 1000:6.2f}]"


def jpeg(image: object) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=75)  # type: ignore[attr-defined]
    return buf.getvalue()


def bench_size(width: int, height: int, rounds: int) -> None:
    with VirtualDisplay(width=width, height=height) as vd:
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(UI_APP)
        app = subprocess.Popen(
            [sys.executable, f.name, str(width), str(height)], env=vd.env(), stdout=subprocess.PIPE, text=True
        )
        try:
            assert app.stdout is not None and app.stdout.readline().strip() == "ready"
            time.sleep(0.3)
            with ScreenCapture(vd.display) as capture:
                for _ in range(5):  # warm up (first mss connection, allocator)
                    jpeg(resize_for_model(capture.grab(), QWEN3_SPEC)[0])
                for name, spec in SPECS.items():
                    grab, resize, encode, total = [], [], [], []
                    size_kb = 0.0
                    info = None
                    for _ in range(rounds):
                        t0 = time.perf_counter()
                        image = capture.grab()
                        t1 = time.perf_counter()
                        resized, info = resize_for_model(image, spec)
                        t2 = time.perf_counter()
                        data = jpeg(resized)
                        t3 = time.perf_counter()
                        grab.append(t1 - t0)
                        resize.append(t2 - t1)
                        encode.append(t3 - t2)
                        total.append(t3 - t0)
                        size_kb = len(data) / 1024
                    assert info is not None
                    rw, rh = info.resized_size
                    print(
                        f"{width}x{height} -> {rw}x{rh} {name:27s} grab {ms(grab)}  resize {ms(resize)}  "
                        f"jpeg {ms(encode)}  total {ms(total)} ms  ({info.tokens} tokens, {size_kb:.0f} KiB)"
                    )
        finally:
            app.terminate()
            app.wait(5)
            os.unlink(f.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}, "
        f"Python {platform.python_version()}, load average {load} (other work on the machine slows every stage)"
    )
    print("figures: median [p90] in ms over", args.rounds, "rounds")
    for width, height in ((1280, 800), (1920, 1080)):
        bench_size(width, height, args.rounds)


if __name__ == "__main__":
    main()
