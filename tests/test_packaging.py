"""Packaging: the package list matches the folders, `tools/` installs as omni_agent.tools, the bare
package imports without heavy optional dependencies, and the console script runs."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_declared_packages_match_folders() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(cfg["packages"])
    on_disk = {"omni_agent.tools"}
    for init in (ROOT / "omni_agent").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        on_disk.add(".".join(rel.parts))
    assert declared == on_disk
    assert not any((ROOT / "tools").glob("*/__init__.py")), "tools/ must stay flat (no sub-packages)"
    assert cfg["package-dir"]["omni_agent.tools"] == "tools"


def test_tools_subpackage_is_importable_under_omni_agent() -> None:
    import omni_agent.tools as t

    assert Path(t.__file__).resolve().parent == ROOT / "tools"


def test_bare_import_is_light() -> None:
    code = (
        "import sys, omni_agent, omni_agent.loop, omni_agent.parsing, omni_agent.validation, omni_agent.cli;"
        "heavy = [m for m in ('torch', 'transformers', 'playwright', 'pyautogui', 'mss', 'sounddevice') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}  # no DISPLAY: importing must not need one
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_console_script_help() -> None:
    exe = Path(sys.executable).parent / "omni-agent"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "tools", "parse", "replay"):
        assert command in proc.stdout


def test_public_api_is_pinned() -> None:
    import omni_agent

    assert omni_agent.__all__ == sorted(omni_agent.__all__)
    for name in omni_agent.__all__:
        assert getattr(omni_agent, name) is not None
    # The names users' code relies on; removing one is a breaking change.
    for name in ("Agent", "tool", "ToolOutput", "ScriptedModel", "load_model", "parse_output", "validate_call"):
        assert name in omni_agent.__all__


def test_wheel_ships_tools_inside_omni_agent(tmp_path: Path) -> None:
    """`pip install .` (a real wheel build): tools/ lands as omni_agent/tools, never top-level."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info into the tree
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("omni_agent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "omni_agent/tools/shell.py" in names and "omni_agent/tools/browser.py" in names
    assert "omni_agent/parsing/qwen.py" in names and "omni_agent/py.typed" in names
    assert not any(n.startswith("tools/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "omni-agent = omni_agent.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
