"""BFCL fidelity: every ground-truth answer in bfcl-eval's data, rendered as Qwen <tool_call>
text, through the project's parser and validator and BFCL's own checker. Prints the count per
category and every entry that does not pass, with its stage and reason.

    .venv/bin/python evals/bfcl/fidelity.py [--categories simple_python,multiple] [--json out.json] [--multi-turn]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from omni_agent.eval.bfcl import SINGLE_TURN_CATEGORIES
from omni_agent.eval.bfcl_fidelity import fidelity
from omni_agent.eval.bfcl_multi_turn import MULTI_TURN_CATEGORIES, fidelity_entry, load_multi_turn
from omni_agent.eval.results import machine_info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--categories", default=",".join(SINGLE_TURN_CATEGORIES))
    ap.add_argument("--limit", type=int, default=None, help="entries per category")
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--multi-turn", action="store_true", help="also replay the multi-turn categories' ground truth")
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = fidelity([c for c in args.categories.split(",") if c], limit=args.limit)
    seconds = time.perf_counter() - t0
    print(f"{'category':24} {'passed':>14} {'coerced by validator':>22}")
    for cat, f in report.items():
        print(f"{cat:24} {f.passed:>6}/{f.entries:<7} {f.coerced:>10}")
    total = sum(f.entries for f in report.values())
    passed = sum(f.passed for f in report.values())
    print(f"{'all':24} {passed:>6}/{total:<7}")
    print("\nexceptions:")
    for f in report.values():
        for e in f.exceptions:
            print("  " + e.line().replace("\n", " "))
    if args.multi_turn:
        print("\nmulti-turn (ground truth replayed by our agent on BFCL's APIs, BFCL's multi_turn_checker):")
        for category in MULTI_TURN_CATEGORIES:
            entries = load_multi_turn(category, limit=args.limit)
            verdicts = [fidelity_entry(e) for e in entries]
            print(f"{category:24} {sum(v.valid for v in verdicts):>6}/{len(entries):<7}")
            for v in verdicts:
                if not v.valid:
                    print(f"  {v.id} [{v.error_type}] {v.error[:200]}")
        seconds = time.perf_counter() - t0
    m = machine_info()
    print(f"\n{seconds:.1f} s on {m['nproc']} cores, {m['cpu']}")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"seconds": seconds, "machine": m, "categories": {c: f.as_dict() for c, f in report.items()}}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
