"""Score any model backend on BFCL single-turn categories with BFCL's AST semantics.

    .venv/bin/python evals/bfcl/score.py --model openai:http://127.0.0.1:8000/v1#qwen \
        [--categories simple_python,parallel] [--limit 50]

One turn per entry: the functions are offered as tools, the answer is parsed with the
project's parser (or taken from the server's native tool_calls), validated against the
converted schemas and matched against BFCL's possible answers. Prints accuracy per category
and where failures happened (parse / validate / match).
"""

from __future__ import annotations

import argparse
import json
import sys

from omni_agent.eval.bfcl import SINGLE_TURN_CATEGORIES, score_model
from omni_agent.exceptions import OmniAgentError
from omni_agent.models.spec import load_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--categories", default=",".join(SINGLE_TURN_CATEGORIES))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", dest="json_out", default=None, help="also write the scores here")
    args = ap.parse_args()
    try:
        model = load_model(args.model)
        print(f"model: {model.info.label}")
        result = score_model(model, [c for c in args.categories.split(",") if c], limit=args.limit)
    except OmniAgentError as exc:  # a bad spec, a server that is down, an unknown category
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"{'category':24} {'correct':>14}   failed at (model / parse / validate / match)")
    for cat, r in result.items():
        f = r["failed_at"]
        print(f"{cat:24} {r['correct']:>5}/{r['entries']:<5} {r['accuracy']:>5.1%}   {f['model']} / {f['parse']} / {f['validate']} / {f['match']}")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"model": model.info.label, "categories": result}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
