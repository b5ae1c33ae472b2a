"""Where a figure was measured: every benchmark and eval report states the machine with it."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["cpu_model", "describe_machine", "machine_info"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _gpu() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(*, gpu: bool = False) -> dict[str, Any]:
    """Cores, CPU model, OS, Python (and the GPU when asked), as a JSON-ready dict."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if gpu:
        info["gpu"] = _gpu()
    return info


def describe_machine(*extra: str, gpu: bool = False) -> str:
    """One line for a benchmark's output, e.g. ``2 cores, Intel Xeon, Linux 6.1, Python 3.11.7``."""
    i = machine_info(gpu=gpu)
    parts = [f"{i['nproc']} cores (nproc)", i["cpu"], f"{platform.system()} {platform.release()}", f"Python {i['python']}"]
    if "loadavg_1m" in i:
        parts.append(f"load {i['loadavg_1m']}")
    if gpu:
        parts.append(f"GPU {i['gpu'] or 'none'}")
    return ", ".join(parts + [e for e in extra if e])
