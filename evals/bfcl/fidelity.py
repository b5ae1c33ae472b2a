"""BFCL fidelity: ground-truth answers rendered as Qwen <tool_call> text must be accepted by the
project's parser + validator + BFCL matcher (100%), and broken variants rejected, per category.

    .venv/bin/python evals/bfcl/fidelity.py [--categories simple_python,multiple] [--json out.json]

Exits 1 when any ground truth is rejected or any broken variant is accepted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from omni_agent.eval.bfcl import SINGLE_TURN_CATEGORIES, fidelity
from omni_agent.eval.results import machine_info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--categories", default=",".join(SINGLE_TURN_CATEGORIES))
    ap.add_argument("--limit", type=int, default=None, help="entries per category")
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = fidelity([c for c in args.categories.split(",") if c], limit=args.limit)
    seconds = time.perf_counter() - t0
    print(f"{'category':24} {'accepted':>14} {'rejected variants':>20} {'schema conflicts':>17}")
    ok = True
    for cat, f in report.items():
        print(f"{cat:24} {f.accepted:>6}/{f.entries:<6} {f.accept_rate:>5.0%} {f.rejected:>8}/{f.variants:<6} {f.reject_rate:>5.0%} {len(f.schema_conflicts):>10}")
        for line in f.failures[:5]:
            print("    FAIL", line)
        ok &= f.accepted == f.entries and f.rejected == f.variants
    m = machine_info()
    print(f"\n{seconds:.1f} s on {m['nproc']} cores, {m['cpu']}")
    print("(schema conflicts: BFCL ground truths that contradict their own function schema; listed with --json)")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"seconds": seconds, "machine": m, "categories": {c: f.as_dict() for c, f in report.items()}}, fh, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
