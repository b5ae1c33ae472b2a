"""File tools confined to a workspace: view, create, exact-string replace, insert.

``file_tools(workspace)`` returns ``file_view`` (kind "file_read"), ``file_create``,
``file_str_replace`` and ``file_insert`` (kind "file_write", so the policy can hold them once a
run has read untrusted content). Paths are relative to the workspace (absolute paths are accepted
when they point inside it); symlinks are resolved before the check, so neither ``..`` nor a link
leads out. Text files only: a file with NUL bytes or invalid UTF-8 is refused rather than
mangled. Writes are atomic (a temporary file in the same folder, then ``os.replace``) and keep
the file's permissions and line endings.

Needs nothing beyond the standard library.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from omni_agent.exceptions import ToolExecutionError, UserError
from omni_agent.tool import Tool, ToolOutput, tool

from .untrusted import downloaded_files

__all__ = ["WorkspaceFiles", "file_tools"]

_SNIPPET_CONTEXT = 4
_MAX_LISTED = 200


class WorkspaceFiles:
    """The operations behind the tools; raise ToolExecutionError with a message for the model."""

    def __init__(self, workspace: str | os.PathLike[str], *, max_view_bytes: int = 32_000,
                 max_file_bytes: int = 10_000_000) -> None:  # fmt: skip
        self.root = Path(workspace).expanduser().resolve()
        if not self.root.is_dir():
            raise UserError(f"file tools: workspace {self.root} is not a folder")
        self.max_view_bytes = max_view_bytes
        self.max_file_bytes = max_file_bytes

    # -- paths and reading ------------------------------------------------------------------------
    def resolve(self, path: str) -> Path:
        """The real path of ``path`` if it lies inside the workspace (symlinks followed)."""
        if not path or "\x00" in path:
            raise ToolExecutionError("give a file path relative to the workspace")
        candidate = Path(path).expanduser()
        full = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if full != self.root and self.root not in full.parents:
            raise ToolExecutionError(
                f"{path!r} is outside the workspace {self.root} (it resolves to {full}); "
                "use a path inside the workspace"
            )
        return full

    def shown(self, full: Path) -> str:
        return str(full.relative_to(self.root)) if full != self.root else "."

    def read_text(self, full: Path, path: str) -> str:
        if not full.exists():
            raise ToolExecutionError(f"{path!r} does not exist in the workspace")
        if full.is_dir():
            raise ToolExecutionError(f"{path!r} is a folder, not a file")
        size = full.stat().st_size
        if size > self.max_file_bytes:
            raise ToolExecutionError(
                f"{path!r} is {size} bytes, over the {self.max_file_bytes}-byte limit of the file tools"
            )
        data = full.read_bytes()
        if b"\x00" in data[:8192]:
            raise ToolExecutionError(f"{path!r} is a binary file; the file tools handle text only")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolExecutionError(
                f"{path!r} is not UTF-8 text (invalid byte at offset {exc.start}); the file tools handle text only"
            ) from exc

    def write_text(self, full: Path, text: str) -> None:
        """Atomic write: a crash leaves the old file or the new one, never half of one."""
        full.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(full.stat().st_mode) if full.exists() else 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(dir=full.parent, prefix=f".{full.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, full)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- operations -------------------------------------------------------------------------------
    def view(self, path: str, start_line: int = 1, end_line: int | None = None) -> str:
        full = self.resolve(path)
        if full.is_dir():
            return self._list(full)
        lines = self.read_text(full, path).splitlines(keepends=True)
        total = len(lines)
        if start_line < 1:
            raise ToolExecutionError(f"start_line must be 1 or more, got {start_line}")
        last = total if end_line is None or end_line == -1 else end_line
        if total == 0:
            return f"{self.shown(full)} is empty"
        if start_line > total:
            raise ToolExecutionError(f"start_line {start_line} is past the end: {path!r} has {total} lines")
        if last < start_line:
            raise ToolExecutionError(f"end_line {end_line} is before start_line {start_line}")
        last = min(last, total)
        out: list[str] = []
        used = 0
        shown_to = start_line - 1
        for number in range(start_line, last + 1):
            content = lines[number - 1].rstrip("\r\n")
            line = f"{number:6}\t{content}\n"
            if used + len(line.encode()) > self.max_view_bytes and out:
                break
            out.append(line)
            used += len(line.encode())
            shown_to = number
        header = f"{self.shown(full)} (lines {start_line}-{shown_to} of {total})\n"
        if shown_to < last:
            out.append(
                f"[output capped at {self.max_view_bytes} bytes: lines {shown_to + 1}-{last} not shown; "
                f"view them with start_line={shown_to + 1}]\n"
            )
        return header + "".join(out).rstrip("\n")

    def _list(self, folder: Path) -> str:
        entries = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        names = [p.name + ("/" if p.is_dir() else "") for p in entries]
        more = f"\n[... {len(names) - _MAX_LISTED} more entries]" if len(names) > _MAX_LISTED else ""
        listing = "\n".join(names[:_MAX_LISTED]) or "(empty folder)"
        return f"{self.shown(folder)}/ ({len(names)} entries)\n{listing}{more}"

    def create(self, path: str, content: str, overwrite: bool = False) -> str:
        full = self.resolve(path)
        if full.is_dir():
            raise ToolExecutionError(f"{path!r} is a folder; give a file path")
        if full.exists() and not overwrite:
            raise ToolExecutionError(
                f"{path!r} already exists; pass overwrite=true to replace it, or edit it with file_str_replace"
            )
        if len(content.encode()) > self.max_file_bytes:
            raise ToolExecutionError(f"content is over the {self.max_file_bytes}-byte limit of the file tools")
        existed = full.exists()
        if existed:
            self.read_text(full, path)  # refuse to overwrite a binary file with text
        self.write_text(full, content)
        lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        return f"{'overwrote' if existed else 'created'} {self.shown(full)} ({lines} lines)"

    def str_replace(self, path: str, old_str: str, new_str: str) -> str:
        full = self.resolve(path)
        text = self.read_text(full, path)
        if not old_str:
            raise ToolExecutionError("old_str is empty; give the exact text to replace")
        if old_str not in text and "\r\n" in text and "\r\n" not in old_str:  # model wrote \n for \r\n
            old_str, new_str = old_str.replace("\n", "\r\n"), new_str.replace("\n", "\r\n")
        count = text.count(old_str)
        if count == 0:
            raise ToolExecutionError(
                f"old_str was not found in {path!r}; no change made. It must match exactly, whitespace "
                "and indentation included: view the file and copy the text"
            )
        if count > 1:
            starts = _occurrence_lines(text, old_str)
            raise ToolExecutionError(
                f"old_str occurs {count} times in {path!r} (starting on lines {', '.join(map(str, starts))}); "
                "no change made. Include more surrounding lines so it matches exactly once"
            )
        at = text.index(old_str)
        new_text = text[:at] + new_str + text[at + len(old_str) :]
        self.write_text(full, new_text)
        first = text.count("\n", 0, at) + 1
        return f"replaced 1 occurrence in {self.shown(full)}\n" + _snippet(new_text, first, new_str.count("\n") + 1)

    def insert(self, path: str, line: int, text: str) -> str:
        full = self.resolve(path)
        old = self.read_text(full, path)
        lines = old.splitlines(keepends=True)
        if line < 0 or line > len(lines):
            raise ToolExecutionError(
                f"line {line} is out of range: {path!r} has {len(lines)} lines (use 0 to insert at the top)"
            )
        newline = "\r\n" if "\r\n" in old else "\n"
        if text and not text.endswith(("\n", "\r")):
            text += newline
        if line and lines and not lines[line - 1].endswith(("\n", "\r")):
            lines[line - 1] += newline
        new_text = "".join(lines[:line]) + text + "".join(lines[line:])
        self.write_text(full, new_text)
        inserted = text.count("\n") or 1
        return f"inserted {inserted} line(s) after line {line} of {self.shown(full)}\n" + _snippet(new_text, line + 1, inserted)


def _occurrence_lines(text: str, needle: str) -> list[int]:
    out: list[int] = []
    start = text.find(needle)
    while start >= 0:
        out.append(text.count("\n", 0, start) + 1)
        start = text.find(needle, start + 1)
    return out


def _snippet(text: str, first: int, count: int) -> str:
    """Numbered lines around an edit, so the model sees the result without another view."""
    lines = text.splitlines()
    lo = max(1, first - _SNIPPET_CONTEXT)
    hi = min(len(lines), first + count - 1 + _SNIPPET_CONTEXT)
    return "\n".join(f"{n:6}\t{lines[n - 1]}" for n in range(lo, hi + 1))


def _umask() -> int:
    # Read it without os.umask(), which sets the umask and is not thread-safe.
    try:
        with open("/proc/self/status") as fh:
            for row in fh:
                if row.startswith("Umask:"):
                    return int(row.split()[1], 8)
    except OSError:
        pass
    return 0o022


def file_tools(workspace: str | os.PathLike[str], *, max_view_bytes: int = 32_000,
               max_file_bytes: int = 10_000_000) -> list[Tool]:  # fmt: skip
    """``file_view``, ``file_create``, ``file_str_replace``, ``file_insert`` for ``workspace``."""
    files = WorkspaceFiles(workspace, max_view_bytes=max_view_bytes, max_file_bytes=max_file_bytes)
    downloads = downloaded_files(files.root)

    def guarded(op: Callable[..., str], *args: object) -> ToolOutput:
        try:
            return ToolOutput(text=op(*args))
        except ToolExecutionError as exc:
            return ToolOutput.error(exc.message)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            return ToolOutput.error(f"the file operation failed: {exc.strerror or exc}{where}")

    @tool(kind="file_read")
    def file_view(path: str, start_line: int = 1, end_line: int | None = None) -> ToolOutput:
        """Show a text file of the workspace with numbered lines (or list a folder).

        Args:
            path: file or folder, relative to the workspace.
            start_line: first line to show (1-based).
            end_line: last line to show (inclusive); omit or -1 for the end of the file.
        """
        output = guarded(files.view, path, start_line, end_line)
        try:
            downloaded = not output.is_error and files.resolve(path) in downloads
        except ToolExecutionError:
            downloaded = False
        if downloaded:  # written by a network command (curl, git clone, ...): outside content
            return ToolOutput(text=output.text + "\n[untrusted content: a downloaded file]", untrusted=True)
        return output

    @tool(kind="file_write")
    def file_create(path: str, content: str, overwrite: bool = False) -> ToolOutput:
        """Create a text file in the workspace (parent folders are created).

        Args:
            path: file path, relative to the workspace.
            content: the whole text of the file.
            overwrite: replace the file if it already exists.
        """
        return guarded(files.create, path, content, overwrite)

    @tool(kind="file_write")
    def file_str_replace(path: str, old_str: str, new_str: str) -> ToolOutput:
        """Replace one exact occurrence of old_str with new_str in a text file of the workspace.

        old_str must occur exactly once (whitespace included); otherwise nothing changes and the
        error says how often it was found.

        Args:
            path: file path, relative to the workspace.
            old_str: the exact text to replace; include enough lines to make it unique.
            new_str: the replacement text (may be empty to delete old_str).
        """
        return guarded(files.str_replace, path, old_str, new_str)

    @tool(kind="file_write")
    def file_insert(path: str, line: int, text: str) -> ToolOutput:
        """Insert text after a given line of a text file of the workspace.

        Args:
            path: file path, relative to the workspace.
            line: insert after this line number; 0 inserts at the top.
            text: the lines to insert.
        """
        return guarded(files.insert, path, line, text)

    return [file_view, file_create, file_str_replace, file_insert]
