"""scripts/setup.sh's torch decision (scripts/torch_choice.py): CUDA where an NVIDIA GPU
answers, the local CPU wheel where pip's find-links has one, else the PyTorch CPU index;
OMNI_TORCH_SPEC wins. Only the decision is tested: no wheel is downloaded."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "torch_choice.py"
spec = importlib.util.spec_from_file_location("torch_choice", SCRIPT)
assert spec is not None and spec.loader is not None
tc = importlib.util.module_from_spec(spec)
sys.modules["torch_choice"] = tc
spec.loader.exec_module(tc)


def test_the_override_wins_over_everything() -> None:
    choice = tc.choose_torch(override="torch==2.5.1 --index-url https://x", gpu=True, local_cpu_wheel="/w/torch.whl")
    assert choice.pip_args == ["torch==2.5.1", "--index-url", "https://x"]
    assert "OMNI_TORCH_SPEC" in choice.description


def test_a_gpu_gets_the_cuda_build_from_pypi() -> None:
    choice = tc.choose_torch(override=None, gpu=True, local_cpu_wheel=None)
    assert choice.pip_args == [f"torch=={tc.TORCH_VERSION}"]
    assert "CUDA" in choice.description and "nvidia-smi" in choice.description


def test_a_local_cpu_wheel_is_preferred_without_a_gpu() -> None:
    choice = tc.choose_torch(override=None, gpu=False, local_cpu_wheel="/opt/wheels/torch-2.13.0+cpu-cp311-x.whl")
    assert choice.pip_args == [f"torch=={tc.TORCH_VERSION}"]
    assert "CPU build" in choice.description and "/opt/wheels/" in choice.description


def test_elsewhere_the_cpu_build_comes_from_the_pytorch_cpu_index() -> None:
    choice = tc.choose_torch(override=None, gpu=False, local_cpu_wheel=None)
    assert choice.pip_args == [f"torch=={tc.TORCH_VERSION}", "--index-url", "https://download.pytorch.org/whl/cpu"]
    assert "CPU build" in choice.description


def test_find_links_folders_come_from_pip_config_and_the_environment(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    config = f":env:.find-links='{a}'\nglobal.find-links='file://{b} https://example.com/wheels'\nglobal.cert='/x'\n"
    dirs = tc.find_links_dirs(config, {"PIP_FIND_LINKS": str(tmp_path / "c")})
    assert dirs == [a, b, tmp_path / "c"]


def test_only_a_cpu_wheel_of_that_version_for_this_python_counts(tmp_path: Path) -> None:
    for name in ["torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl", "torch-2.12.0+cpu-cp311-cp311-linux_x86_64.whl",
                 "torch-2.13.0+cpu-cp310-cp310-linux_x86_64.whl"]:  # fmt: skip
        (tmp_path / name).touch()
    assert tc.local_cpu_wheel([tmp_path, tmp_path / "missing"], version="2.13.0", python_tag="cp311") is None
    good = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    good.touch()
    assert tc.local_cpu_wheel([tmp_path], version="2.13.0", python_tag="cp311") == str(good)


def test_the_script_prints_pip_arguments_then_what_it_installs(tmp_path: Path) -> None:
    env = {**os.environ, "OMNI_TORCH_SPEC": "torch==9.9.9"}
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines() == ["torch==9.9.9", "# torch==9.9.9 (OMNI_TORCH_SPEC)"]
    # a machine without nvidia-smi on PATH and no find-links: the CPU index
    bare = {"PATH": str(tmp_path), "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=bare, check=True).stdout
    assert out.splitlines()[:3] == [f"torch=={tc.TORCH_VERSION}", "--index-url", "https://download.pytorch.org/whl/cpu"]
