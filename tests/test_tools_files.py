"""File tools: view / create / str_replace / insert, confined to the workspace, text only, atomic."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from omni_agent.exceptions import UserError
from omni_agent.registry import ToolRegistry
from omni_agent.tool import Tool, ToolOutput
from omni_agent.tools.files import WorkspaceFiles, file_tools


@pytest.fixture
def tools(shell_workspace: Path) -> dict[str, Tool]:
    return {t.name: t for t in file_tools(shell_workspace, max_view_bytes=400)}


def call(tools: dict[str, Tool], name: str, **arguments: object) -> ToolOutput:
    return asyncio.run(tools[name].call(dict(arguments)))


def test_tool_set(tools: dict[str, Tool]) -> None:
    assert list(tools) == ["file_view", "file_create", "file_str_replace", "file_insert"]
    assert [t.kind for t in tools.values()] == ["file_read", "file_write", "file_write", "file_write"]
    ToolRegistry(tools.values())
    assert tools["file_str_replace"].parameters["required"] == ["path", "old_str", "new_str"]
    assert "exactly once" in tools["file_str_replace"].description


def test_view_numbers_lines_and_ranges(tools: dict[str, Tool], shell_workspace: Path) -> None:
    (shell_workspace / "a.txt").write_text("one\ntwo\r\nthree\nfour\n")
    whole = call(tools, "file_view", path="a.txt")
    assert whole.text == "a.txt (lines 1-4 of 4)\n     1\tone\n     2\ttwo\n     3\tthree\n     4\tfour"
    part = call(tools, "file_view", path="a.txt", start_line=2, end_line=3)
    assert part.text == "a.txt (lines 2-3 of 4)\n     2\ttwo\n     3\tthree"
    assert call(tools, "file_view", path="a.txt", start_line=3, end_line=-1).text.endswith("     4\tfour")
    assert call(tools, "file_view", path="a.txt", start_line=3, end_line=99).text.endswith("     4\tfour")


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [(0, None, "start_line must be 1 or more"), (9, None, "past the end: 'a.txt' has 2 lines"), (2, 1, "before start_line")],
)
def test_view_bad_ranges(tools: dict[str, Tool], shell_workspace: Path, start: int, end: int | None, message: str) -> None:
    (shell_workspace / "a.txt").write_text("x\ny\n")
    out = call(tools, "file_view", path="a.txt", start_line=start, end_line=end)
    assert out.is_error and message in out.text


def test_view_is_capped_and_says_where_to_continue(tools: dict[str, Tool], shell_workspace: Path) -> None:
    (shell_workspace / "long.txt").write_text("".join(f"line number {i}\n" for i in range(1, 101)))
    out = call(tools, "file_view", path="long.txt")
    assert len(out.text.encode()) < 600
    shown = out.text.splitlines()[-2].split("\t")[0].strip()
    assert f"lines {int(shown) + 1}-100 not shown; view them with start_line={int(shown) + 1}" in out.text


def test_view_lists_a_folder(tools: dict[str, Tool], shell_workspace: Path) -> None:
    (shell_workspace / "sub").mkdir()
    (shell_workspace / "b.txt").write_text("")
    assert call(tools, "file_view", path=".").text == "./ (2 entries)\nsub/\nb.txt"
    assert call(tools, "file_view", path="b.txt").text == "b.txt is empty"


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "sub/../../outside.txt", "link-out/passwd", "link-file"])
def test_paths_outside_the_workspace_are_refused(tools: dict[str, Tool], shell_workspace: Path, path: str) -> None:
    (shell_workspace / "sub").mkdir()
    (shell_workspace / "link-out").symlink_to("/etc")
    (shell_workspace.parent / "outside.txt").write_text("secret\n")
    (shell_workspace / "link-file").symlink_to(shell_workspace.parent / "outside.txt")
    for name, args in [("file_view", {}), ("file_create", {"content": "x", "overwrite": True}),
                       ("file_str_replace", {"old_str": "secret", "new_str": "gone"}),
                       ("file_insert", {"line": 0, "text": "x"})]:  # fmt: skip
        out = call(tools, name, path=path, **args)
        assert out.is_error and "outside the workspace" in out.text, (name, out.text)
    assert (shell_workspace.parent / "outside.txt").read_text() == "secret\n"


def test_absolute_path_inside_and_symlink_inside_are_fine(tools: dict[str, Tool], shell_workspace: Path) -> None:
    (shell_workspace / "real.txt").write_text("hello\n")
    (shell_workspace / "alias.txt").symlink_to(shell_workspace / "real.txt")
    assert "hello" in call(tools, "file_view", path=str(shell_workspace / "real.txt")).text
    assert not call(tools, "file_str_replace", path="alias.txt", old_str="hello", new_str="bye").is_error
    assert (shell_workspace / "real.txt").read_text() == "bye\n"
    assert (shell_workspace / "alias.txt").is_symlink()  # the link was followed, not replaced


def test_binary_and_non_utf8_files_are_refused(tools: dict[str, Tool], shell_workspace: Path) -> None:
    (shell_workspace / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (shell_workspace / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    out = call(tools, "file_view", path="img.png")
    assert out.is_error and "binary file" in out.text
    out = call(tools, "file_str_replace", path="latin1.txt", old_str="caf", new_str="x")
    assert out.is_error and "not UTF-8 text (invalid byte at offset 3)" in out.text
    out = call(tools, "file_create", path="img.png", content="text", overwrite=True)
    assert out.is_error and "binary" in out.text
    assert (shell_workspace / "img.png").read_bytes().startswith(b"\x89PNG")


def test_create_new_nested_and_refuse_overwrite(tools: dict[str, Tool], shell_workspace: Path) -> None:
    out = call(tools, "file_create", path="pkg/mod/__init__.py", content="x = 1\ny = 2\n")
    assert out.text == "created pkg/mod/__init__.py (2 lines)" and not out.is_error
    assert (shell_workspace / "pkg/mod/__init__.py").read_text() == "x = 1\ny = 2\n"
    again = call(tools, "file_create", path="pkg/mod/__init__.py", content="z")
    assert again.is_error and "already exists; pass overwrite=true" in again.text
    assert (shell_workspace / "pkg/mod/__init__.py").read_text() == "x = 1\ny = 2\n"
    assert call(tools, "file_create", path="pkg/mod/__init__.py", content="z", overwrite=True).text.startswith("overwrote")
    assert (shell_workspace / "pkg/mod/__init__.py").read_text() == "z"
    assert call(tools, "file_create", path="pkg", content="z").is_error  # a folder


def test_str_replace_exactly_once(tools: dict[str, Tool], shell_workspace: Path) -> None:
    f = shell_workspace / "code.py"
    f.write_text("def a():\n    return 1\n\ndef b():\n    return 1\n")
    none = call(tools, "file_str_replace", path="code.py", old_str="return 2", new_str="x")
    assert none.is_error and "old_str was not found in 'code.py'; no change made" in none.text
    many = call(tools, "file_str_replace", path="code.py", old_str="return 1", new_str="return 2")
    assert many.is_error and "old_str occurs 2 times in 'code.py' (starting on lines 2, 5); no change made" in many.text
    assert f.read_text() == "def a():\n    return 1\n\ndef b():\n    return 1\n"
    ok = call(tools, "file_str_replace", path="code.py", old_str="def b():\n    return 1", new_str="def b():\n    return 42")
    assert not ok.is_error and ok.text.startswith("replaced 1 occurrence in code.py\n")
    assert "     5\t    return 42" in ok.text
    assert f.read_text() == "def a():\n    return 1\n\ndef b():\n    return 42\n"
    empty = call(tools, "file_str_replace", path="code.py", old_str="", new_str="x")
    assert empty.is_error and "old_str is empty" in empty.text


def test_str_replace_keeps_crlf_and_permissions(tools: dict[str, Tool], shell_workspace: Path) -> None:
    f = shell_workspace / "run.sh"
    f.write_bytes(b"#!/bin/sh\r\necho one\r\necho two\r\n")
    f.chmod(0o750)
    out = call(tools, "file_str_replace", path="run.sh", old_str="echo one\necho two", new_str="echo 1\necho 2")
    assert not out.is_error
    assert f.read_bytes() == b"#!/bin/sh\r\necho 1\r\necho 2\r\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o750


def test_insert_after_line(tools: dict[str, Tool], shell_workspace: Path) -> None:
    f = shell_workspace / "list.txt"
    f.write_text("a\nb\nc")  # no final newline
    assert not call(tools, "file_insert", path="list.txt", line=0, text="top").is_error
    assert f.read_text() == "top\na\nb\nc"
    assert not call(tools, "file_insert", path="list.txt", line=2, text="a2\na3\n").is_error
    assert f.read_text() == "top\na\na2\na3\nb\nc"
    out = call(tools, "file_insert", path="list.txt", line=6, text="end")
    assert out.text.startswith("inserted 1 line(s) after line 6 of list.txt")
    assert f.read_text() == "top\na\na2\na3\nb\nc\nend\n"
    bad = call(tools, "file_insert", path="list.txt", line=99, text="x")
    assert bad.is_error and "line 99 is out of range: 'list.txt' has 7 lines" in bad.text
    assert call(tools, "file_insert", path="list.txt", line=-1, text="x").is_error
    missing = call(tools, "file_insert", path="nope.txt", line=0, text="x")
    assert missing.is_error and "'nope.txt' does not exist" in missing.text


def test_writes_are_atomic_and_leave_no_temp_files(shell_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = WorkspaceFiles(shell_workspace)
    target = shell_workspace / "data.txt"
    target.write_text("old content\n")

    def crash(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        files.str_replace("data.txt", "old", "new")
    assert target.read_text() == "old content\n"
    assert sorted(p.name for p in shell_workspace.iterdir()) == ["data.txt"]


def test_os_errors_become_clean_tool_errors(tools: dict[str, Tool], shell_workspace: Path) -> None:
    (shell_workspace / "plain.txt").write_text("x\n")
    out = call(tools, "file_create", path="plain.txt/child.txt", content="y")
    assert out.is_error and "plain.txt" in out.text and "Traceback" not in out.text


def test_size_limit(shell_workspace: Path) -> None:
    [view, create, *_] = file_tools(shell_workspace, max_file_bytes=100)
    (shell_workspace / "big.txt").write_text("x" * 200)
    out = asyncio.run(view.call({"path": "big.txt"}))
    assert out.is_error and "200 bytes, over the 100-byte limit" in out.text
    assert asyncio.run(create.call({"path": "n.txt", "content": "y" * 101})).is_error


def test_workspace_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        file_tools(tmp_path / "missing")
