"""Which torch build scripts/setup.sh installs, and how (standard library only: it runs before
anything else is installed).

    python scripts/torch_choice.py        # prints the pip arguments, one per line, then a
                                          # last line "# <what it installs and why>"

The rules, in order:

1. ``OMNI_TORCH_SPEC`` is set: exactly that (``pip install $OMNI_TORCH_SPEC``).
2. An NVIDIA GPU is present (``nvidia-smi`` runs and exits 0): ``torch==VERSION`` from PyPI,
   whose Linux wheels are the CUDA builds.
3. A CPU wheel of that version for this Python sits in one of pip's find-links folders (pip
   config or ``PIP_FIND_LINKS``, as on the project's own machines): ``torch==VERSION``, which pip
   takes from that folder.
4. Otherwise: ``torch==VERSION`` from the PyTorch CPU index
   (``--index-url https://download.pytorch.org/whl/cpu``): plain ``torch`` on PyPI is the
   multi-GB CUDA build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TORCH_VERSION = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class TorchChoice:
    pip_args: list[str]
    description: str


def choose_torch(
    *, override: str | None, gpu: bool, local_cpu_wheel: str | None, version: str = TORCH_VERSION
) -> TorchChoice:
    """The decision itself, from facts gathered elsewhere (so it can be tested anywhere)."""
    if override:
        return TorchChoice(override.split(), f"{override} (OMNI_TORCH_SPEC)")
    spec = f"torch=={version}"
    if gpu:
        return TorchChoice([spec], f"{spec}, the CUDA build from PyPI (an NVIDIA GPU answers nvidia-smi)")
    if local_cpu_wheel:
        return TorchChoice([spec], f"{spec}, the CPU build from the local wheel {local_cpu_wheel} (pip find-links)")
    return TorchChoice([spec, "--index-url", CPU_INDEX], f"{spec}, the CPU build from {CPU_INDEX} (no NVIDIA GPU)")


def nvidia_gpu_present() -> bool:
    """True when ``nvidia-smi`` exists and lists a GPU (exit status 0)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_links_dirs(pip_config: str, env: dict[str, str]) -> list[Path]:
    """Local folders in pip's find-links, from ``pip config list`` output and the environment."""
    values = re.findall(r"find-links\s*=\s*'([^']*)'", pip_config)
    values.append(env.get("PIP_FIND_LINKS", ""))
    dirs: list[Path] = []
    for value in values:
        for item in value.split():
            path = Path(item[len("file://") :] if item.startswith("file://") else item)
            if "://" not in item or item.startswith("file://"):
                dirs.append(path)
    return dirs


def local_cpu_wheel(dirs: list[Path], *, version: str = TORCH_VERSION, python_tag: str | None = None) -> str | None:
    """A ``torch-VERSION+cpu`` wheel for this Python in one of ``dirs``, if any."""
    tag = python_tag or f"cp{sys.version_info.major}{sys.version_info.minor}"
    for folder in dirs:
        if not folder.is_dir():
            continue
        for wheel in sorted(folder.glob(f"torch-{version}+cpu-{tag}-*.whl")):
            return str(wheel)
    return None


def _pip_config() -> str:
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout


def main() -> int:
    choice = choose_torch(
        override=os.environ.get("OMNI_TORCH_SPEC"),
        gpu=nvidia_gpu_present(),
        local_cpu_wheel=local_cpu_wheel(find_links_dirs(_pip_config(), dict(os.environ))),
    )
    print("\n".join(choice.pip_args))
    print(f"# {choice.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
