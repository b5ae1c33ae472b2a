"""A small Tk app that logs its input events as JSON lines, for desktop-tool tests.

    python tests/apps/event_logger.py LOG_FILE [--geometry 1280x800+0+0]

Layout (root coordinates when placed at +0+0): a text entry at x 40..640, y 40..76; a canvas
covering y >= 120 that records clicks, drags and the wheel. Every line is one event:
``{"type": "ready" | "press" | "release" | "double" | "triple" | "drag" | "wheel" | "key" |
"text", ...}`` with root coordinates ``x``, ``y``. It exits on SIGTERM or when its window closes.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import tkinter as tk

ENTRY_BOX = (40, 40, 600, 36)  # x, y, width, height
CANVAS_TOP = 120
SHIFT, CONTROL, ALT = 0x1, 0x4, 0x8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("--geometry", default="1280x800+0+0")
    args = parser.parse_args()
    out = open(args.log, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the app

    def log(kind: str, **fields: object) -> None:
        out.write(json.dumps({"type": kind, "t": time.time(), **fields}, ensure_ascii=False) + "\n")
        out.flush()

    root = tk.Tk()
    root.title("event-logger")
    root.geometry(args.geometry)
    text = tk.StringVar()
    entry = tk.Entry(root, textvariable=text, font=("DejaVu Sans", 14))
    entry.place(x=ENTRY_BOX[0], y=ENTRY_BOX[1], width=ENTRY_BOX[2], height=ENTRY_BOX[3])
    canvas = tk.Canvas(root, bg="white", highlightthickness=0)
    canvas.place(x=0, y=CANVAS_TOP, relwidth=1.0, relheight=1.0, height=-CANVAS_TOP)

    def modifiers(state: int) -> list[str]:
        return [name for bit, name in ((SHIFT, "shift"), (CONTROL, "ctrl"), (ALT, "alt")) if state & bit]

    def on_button(kind: str):
        def handler(ev: tk.Event) -> None:
            if ev.num in (4, 5):  # Tk 8.6 on X11: wheel = buttons 4/5; horizontal = Shift + 4/5
                if kind == "press":
                    horizontal = bool(ev.state & SHIFT)
                    direction = ("left" if ev.num == 4 else "right") if horizontal else ("up" if ev.num == 4 else "down")
                    log("wheel", direction=direction, x=ev.x_root, y=ev.y_root)
                return
            log(kind, button=ev.num, x=ev.x_root, y=ev.y_root, modifiers=modifiers(ev.state))

        return handler

    canvas.bind("<ButtonPress>", on_button("press"))
    canvas.bind("<ButtonRelease>", on_button("release"))
    canvas.bind("<Double-Button-1>", lambda ev: log("double", button=1, x=ev.x_root, y=ev.y_root))
    canvas.bind("<Triple-Button-1>", lambda ev: log("triple", button=1, x=ev.x_root, y=ev.y_root))
    canvas.bind("<B1-Motion>", lambda ev: log("drag", x=ev.x_root, y=ev.y_root))
    # On the toplevel's tag (in every child's bindtags), not on "all": "all" has a more specific
    # <Alt-Key> binding (menu traversal) that would hide Alt hotkeys from a <KeyPress> there.
    root.bind("<KeyPress>", lambda ev: log("key", keysym=ev.keysym, char=ev.char, modifiers=modifiers(ev.state)))
    text.trace_add("write", lambda *_: log("text", text=text.get()))

    signal.signal(signal.SIGTERM, lambda *_: root.after(0, root.destroy))
    tick = lambda: root.after(100, tick)  # noqa: E731
    tick()

    root.wait_visibility(root)
    root.update_idletasks()
    entry.focus_force()
    log(
        "ready",
        window={"x": root.winfo_rootx(), "y": root.winfo_rooty(), "width": root.winfo_width(), "height": root.winfo_height()},
        entry={"x": entry.winfo_rootx(), "y": entry.winfo_rooty(), "width": entry.winfo_width(), "height": entry.winfo_height()},
        canvas_top=canvas.winfo_rooty(),
    )
    root.mainloop()
    out.close()


if __name__ == "__main__":
    sys.exit(main())
