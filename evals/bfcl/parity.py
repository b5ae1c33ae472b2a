"""Verdict parity with bfcl_eval: model-style Qwen outputs (right, coerced kinds, wrong, malformed,
hidden in thinking, no call) judged by the project's BFCL scoring and by bfcl_eval's own runner
path for Qwen FC models. Prints agreement per output kind; exits 1 on any disagreement.

    .venv/bin/python evals/bfcl/parity.py [--per-category 4]
"""

from __future__ import annotations

import argparse
import collections
import sys

from omni_agent.eval.bfcl import SINGLE_TURN_CATEGORIES
from omni_agent.eval.bfcl_parity import model_style_outputs, parity


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-category", type=int, default=4)
    args = ap.parse_args()
    rows = parity(model_style_outputs(SINGLE_TURN_CATEGORIES, per_category=args.per_category))
    kinds: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for r in rows:
        k = kinds[r.kind]
        k[0] += 1
        k[1] += r.ours == r.bfcl
        k[2] += r.bfcl
    print(f"{'output kind':26} {'same verdict':>14} {'BFCL: correct':>14}")
    for kind, (n, same, ok) in sorted(kinds.items()):
        print(f"{kind:26} {same:>6}/{n:<7} {ok:>8}")
    same = sum(r.ours == r.bfcl for r in rows)
    print(f"{'all':26} {same:>6}/{len(rows)}")
    for r in rows:
        if r.ours != r.bfcl:
            print(f"  DIFFERENT {r.id} {r.kind}: ours {r.ours}, BFCL {r.bfcl}")
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
