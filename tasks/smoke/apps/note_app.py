"""A Tk text field filling the screen: pressing Enter saves its text to note.txt."""

import tkinter as tk
from pathlib import Path

root = tk.Tk()
root.title("Smoke Note")
root.geometry("1280x800+0+0")
entry = tk.Entry(root, font=("DejaVu Sans", 32))
entry.pack(fill="both", expand=True)


def save(_event: object) -> None:
    Path("note.txt").write_text(entry.get() + "\n")


entry.bind("<Return>", save)
entry.focus_set()
root.mainloop()
