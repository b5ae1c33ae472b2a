"""Score any model backend on BFCL single-turn categories with bfcl_eval's own checker.

    .venv/bin/python evals/bfcl/score.py --model openai:http://127.0.0.1:8000/v1#qwen \
        [--categories simple_python,parallel] [--limit 50]

One turn per entry: the functions are offered as tools (as BFCL offers them), the calls are
taken as the model wrote them (the server's native tool_calls, or the <tool_call> blocks of the
text, no validator coercion) and judged by bfcl_eval's AST checker or its relevance rule.
Multi-turn categories: our agent, turn by turn, on BFCL's simulated APIs, judged by BFCL's
multi_turn_checker. Prints accuracy per category and the failures by BFCL's error type.
"""

from __future__ import annotations

import argparse
import json
import sys

from omni_agent.eval.bfcl import SINGLE_TURN_CATEGORIES, score_model
from omni_agent.eval.bfcl_multi_turn import MULTI_TURN_CATEGORIES, score_multi_turn
from omni_agent.exceptions import OmniAgentError
from omni_agent.models.spec import load_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--categories", default=",".join(SINGLE_TURN_CATEGORIES + MULTI_TURN_CATEGORIES))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", dest="json_out", default=None, help="also write the scores here")
    args = ap.parse_args()
    try:
        model = load_model(args.model)
        print(f"model: {model.info.label}")
        wanted = [c for c in args.categories.split(",") if c]
        single = [c for c in wanted if c not in MULTI_TURN_CATEGORIES]
        result = score_model(model, single, limit=args.limit) if single else {}
        multi = [c for c in wanted if c in MULTI_TURN_CATEGORIES]
        result |= score_multi_turn(model, multi, limit=args.limit) if multi else {}
    except OmniAgentError as exc:  # a bad spec, a server that is down, an unknown category
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"{'category':24} {'correct':>14}   failures by BFCL error type (model = the request failed)")
    for cat, r in result.items():
        failures = ", ".join(f"{k} {v}" for k, v in r["failed_at"].items() if v)
        print(f"{cat:24} {r['correct']:>5}/{r['entries']:<5} {r['accuracy']:>5.1%}   {failures}")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"model": model.info.label, "categories": result}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
