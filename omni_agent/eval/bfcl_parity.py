"""Verdict parity with BFCL itself: model-style Qwen outputs (right answers, the kinds our
validator would coerce, wrong values, malformed blocks, calls hidden in thinking, no call...)
judged twice, by :func:`omni_agent.eval.bfcl.judge_text` and by bfcl_eval's own evaluation
path for Qwen function-calling models (``QwenFCHandler.decode_ast`` on the text after
``</think>``, then ``_evaluate_single_ast_entry`` / ``_evaluate_single_relevance_entry``).

The reference needs more of bfcl_eval than scoring does (its model handlers import ``openai``,
``overrides`` and ``tree_sitter``); ``scripts/setup.sh`` installs those.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..prompting import render_tool_call
from .bfcl import BfclEntry, first_answer, judge_text, load_category
from .bfcl_checker import ANY_CALL_CATEGORIES, BFCL_MODEL_NAME, NO_CALL_CATEGORIES, _bfcl, language_for

__all__ = ["Case", "ParityRow", "model_style_outputs", "parity", "reference_verdict"]


@dataclass(frozen=True)
class Case:
    entry: BfclEntry
    kind: str
    text: str


@dataclass(frozen=True)
class ParityRow:
    id: str
    kind: str
    ours: bool
    bfcl: bool


def _block(name: str, args: Any) -> str:
    return render_tool_call(name, args)


def _raw_block(payload: str) -> str:
    return f"<tool_call>\n{payload}\n</tool_call>"


def _coerced_variants(name: str, args: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The values our validator turns into the declared type, written the way models write them."""
    for key, value in args.items():
        if isinstance(value, bool):
            yield "bool_as_string", {**args, key: "true" if value else "false"}
        elif isinstance(value, int):
            yield "int_as_string", {**args, key: str(value)}
            yield "int_as_float", {**args, key: float(value)}
        elif isinstance(value, float):
            yield "float_as_string", {**args, key: str(value)}
            if value.is_integer():
                yield "float_as_int", {**args, key: int(value)}
        elif isinstance(value, (list, dict)):
            yield "json_in_string", {**args, key: json.dumps(value)}


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 7919
    if isinstance(value, str):
        return value + " zq"
    if isinstance(value, list):
        return [*value, "zq"]
    return None


def _answer_cases(entry: BfclEntry) -> Iterator[Case]:
    calls = first_answer(entry)
    text = "\n".join(_block(n, a) for n, a in calls)
    name, args = calls[0]
    rest = "\n".join(_block(n, a) for n, a in calls[1:])
    join = (lambda first: first + ("\n" + rest if rest else ""))  # noqa: E731
    yield Case(entry, "exact", text)
    yield Case(entry, "thinking_then_calls", f"<think>\nThe user wants {name}.\n</think>\n\n{text}")
    yield Case(entry, "text_then_calls", f"Sure, let me do that.\n{text}")
    yield Case(entry, "call_only_in_thinking", f"<think>\n{text}\n</think>\n\nI would call {name}.")
    yield Case(entry, "no_call", "I am not sure which function fits.")
    yield Case(entry, "duplicated_call", f"{text}\n{_block(name, args)}")
    yield Case(entry, "wrong_name", join(_block(name + "_v2", args)))
    yield Case(entry, "extra_argument", join(_block(name, {**args, "zq_extra": 1})))
    yield Case(entry, "arguments_as_json_string", join(_raw_block(json.dumps({"name": name, "arguments": json.dumps(args)}))))
    yield Case(entry, "single_quoted_json", join(_raw_block(str({"name": name, "arguments": args}))))
    yield Case(entry, "truncated_json", join(_raw_block(json.dumps({"name": name, "arguments": args})[:-2])))
    if args:
        key = next(iter(args))
        yield Case(entry, "missing_argument", join(_block(name, {k: v for k, v in args.items() if k != key})))
        changed = _changed(args[key])
        if changed is not None:
            yield Case(entry, "wrong_value", join(_block(name, {**args, key: changed})))
    for kind, variant in _coerced_variants(name, args):
        yield Case(entry, kind, join(_block(name, variant)))


def _relevance_cases(entry: BfclEntry) -> Iterator[Case]:
    fn = entry.functions[0]
    required = (fn.get("parameters") or {}).get("required") or []
    args = {k: "x" for k in required}
    call = _block(fn["name"], args)
    yield Case(entry, "no_call", "None of these functions can help with that.")
    yield Case(entry, "call", call)
    yield Case(entry, "thinking_then_call", f"<think>\nMaybe {fn['name']}.\n</think>\n\n{call}")
    yield Case(entry, "call_only_in_thinking", f"<think>\n{call}\n</think>\n\nI cannot help with that.")
    yield Case(entry, "truncated_json", _raw_block(json.dumps({"name": fn["name"], "arguments": args})[:-2]))
    yield Case(entry, "empty_arguments_call", _block(fn["name"], {}))


def model_style_outputs(categories: Iterable[str], *, per_category: int) -> list[Case]:
    """The comparison set: for the first ``per_category`` entries of each category, every kind."""
    cases: list[Case] = []
    for category in categories:
        for entry in load_category(category)[:per_category]:
            no_answer = category in NO_CALL_CATEGORIES or category in ANY_CALL_CATEGORIES
            cases.extend(_relevance_cases(entry) if no_answer else _answer_cases(entry))
    return cases


def _qwen_handler() -> Any:
    _bfcl()  # the model-config stand-in, when bfcl_eval's own cannot import
    from bfcl_eval.model_handler.local_inference.qwen_fc import QwenFCHandler

    return QwenFCHandler("Qwen/Qwen3-8B", 0.001, "Qwen/Qwen3-8B-FC", True)


def reference_verdict(case: Case, handler: Any) -> bool:
    """bfcl_eval's own verdict, the way its runner reaches it for a Qwen FC model."""
    from bfcl_eval.constants.enums import ReturnFormat
    from bfcl_eval.eval_checker.eval_runner import _evaluate_single_ast_entry, _evaluate_single_relevance_entry

    text = case.text
    if "</think>" in text:
        text = text.split("</think>")[-1].lstrip("\n")
    entry = case.entry
    prompt = {"id": entry.id, "question": [entry.messages], "function": entry.functions}
    if entry.category in NO_CALL_CATEGORIES or entry.category in ANY_CALL_CATEGORIES:
        result = _evaluate_single_relevance_entry(handler, entry.id, text, prompt, BFCL_MODEL_NAME, entry.category)
    else:
        result = _evaluate_single_ast_entry(
            handler, entry.id, text, entry.ground_truth, prompt, BFCL_MODEL_NAME, entry.category,
            language_for(entry.category), ReturnFormat.PYTHON, False,
        )  # fmt: skip
    return bool(result["valid"])


def parity(cases: Iterable[Case]) -> list[ParityRow]:
    handler = _qwen_handler()
    return [
        ParityRow(c.entry.id, c.kind, judge_text(c.entry, c.text).ok, reference_verdict(c, handler)) for c in cases
    ]
