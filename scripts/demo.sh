#!/usr/bin/env bash
# The main command: set up (scripts/setup.sh), then run the smoke suite (tasks/smoke) with the
# scripted reference policy on virtual displays with 2 parallel workers, and say where the
# HTML report is. The reference policy replays each task's known solution: the run checks the
# harness, the tools and the tasks end to end; the report says so and is never a model result.
#   scripts/demo.sh [--out DIR] [--workers N]   (extra arguments go to `eval`)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT="runs/smoke-$(date +%Y%m%d-%H%M%S)"
exec .venv/bin/omni-agent eval smoke --model reference --workers 2 --out "$OUT" "$@"
