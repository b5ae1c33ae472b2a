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
from omni_agent.models.spec import load_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--categories", default=",".join(SINGLE_TURN_CATEGORIES))
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    model = load_model(args.model)
    print(f"model: {model.info.label}")
    result = score_model(model, [c for c in args.categories.split(",") if c], limit=args.limit)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
