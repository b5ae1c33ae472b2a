"""A one-button Tk window filling the screen's top-left 1280x800: clicking it writes clicked.txt."""

import tkinter as tk
from pathlib import Path

root = tk.Tk()
root.title("Smoke Click")
root.geometry("1280x800+0+0")


def clicked() -> None:
    Path("clicked.txt").write_text("clicked\n")
    button.configure(text="Done")


button = tk.Button(root, text="Press me", font=("DejaVu Sans", 40), command=clicked)
button.pack(fill="both", expand=True)
root.mainloop()
