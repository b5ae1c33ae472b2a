"""BFCL fidelity: every ground-truth answer in the shipped data, rendered as Qwen output, through
the project's parser and validator and BFCL's own checker; each entry that does not pass all
three is listed with its stage and reason, never dropped.

- Categories with possible answers: BFCL's first acceptable answer (:func:`first_answer`, no
  choosing of values that suit our schema) as ``<tool_call>`` blocks. Stages: ``parser`` (a block
  lost), ``bfcl_checker`` (BFCL rejects its own first answer: a conflict inside BFCL's data),
  ``validator`` (our JSON Schema of the function rejects it: a conflict between BFCL's answer
  and its own function schema, or a conversion gap of ours; the reason says which).
- Irrelevance / relevance (no possible answers): from each entry's own functions, a plain-text
  answer and a call of its first function; BFCL's rule must count the text as no call and the
  call as a call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..messages import ToolCall
from ..prompting import render_tool_call
from ..registry import ToolRegistry
from ..validation import validate_call
from .bfcl import SINGLE_TURN_CATEGORIES, BfclEntry, first_answer, judge_text, load_category, tools_for
from .bfcl_checker import ANY_CALL_CATEGORIES, NO_CALL_CATEGORIES, decode_text

__all__ = ["CategoryFidelity", "FidelityIssue", "fidelity", "render_calls"]

NO_CALL_TEXT = "None of the functions I have can do that, so I cannot make a call."


@dataclass(frozen=True)
class FidelityIssue:
    """One entry that did not pass, and why."""

    id: str
    stage: str
    """``parser``, ``bfcl_checker`` or ``validator``."""
    reason: str
    data_conflict: bool
    """True when BFCL disagrees with itself: its checker rejects its own answer, or the answer breaks its own function schema."""

    def line(self) -> str:
        kind = "BFCL-internal conflict" if self.data_conflict else "pipeline"
        return f"{self.id} [{self.stage}; {kind}] {self.reason}"


@dataclass
class CategoryFidelity:
    category: str
    entries: int = 0
    passed: int = 0
    coerced: int = 0
    """Entries the validator accepts only after changing a value (BFCL scores them as written)."""
    exceptions: list[FidelityIssue] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"category": self.category, "entries": self.entries, "passed": self.passed, "coerced": self.coerced,
                "exceptions": [e.__dict__ for e in self.exceptions]}  # fmt: skip


def render_calls(calls: list[tuple[str, Any]]) -> str:
    return "\n".join(render_tool_call(name, args) for name, args in calls)


def fidelity(categories: Iterable[str] = SINGLE_TURN_CATEGORIES, *, limit: int | None = None) -> dict[str, CategoryFidelity]:
    report: dict[str, CategoryFidelity] = {}
    for category in categories:
        fid = CategoryFidelity(category)
        for entry in load_category(category)[:limit]:
            fid.entries += 1
            if category in NO_CALL_CATEGORIES or category in ANY_CALL_CATEGORIES:
                problem = _relevance_problem(entry)
                coerced = False
            else:
                problem, coerced = _answer_problem(entry)
            fid.coerced += coerced
            if problem is None:
                fid.passed += 1
            else:
                fid.exceptions.append(problem)
        report[category] = fid
    return report


def _answer_problem(entry: BfclEntry) -> tuple[FidelityIssue | None, bool]:
    calls = first_answer(entry)
    if entry.category.endswith(("java", "javascript")):
        calls = [(name, _as_source(entry, name, args)) for name, args in calls]
    text = render_calls(calls)
    decoded = decode_text(text)
    if decoded.dropped or len(decoded.calls) != len(calls):
        return FidelityIssue(entry.id, "parser", "; ".join(decoded.dropped) or "calls lost", False), False
    verdict = judge_text(entry, text)
    if not verdict.ok:
        return FidelityIssue(entry.id, "bfcl_checker", f"{verdict.error_type}: {verdict.reason}", True), False
    registry = ToolRegistry(tools_for(entry))
    coerced = False
    for name, args in calls:
        checked = validate_call(ToolCall(name=name, arguments=args), registry)
        if not checked.ok:
            conflict = _schema_conflict(entry, name, args)
            return FidelityIssue(entry.id, "validator", conflict or checked.message, conflict is not None), False
        coerced |= checked.call is not None and checked.call.arguments != args
    return None, coerced


def _as_source(entry: BfclEntry, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Java / JavaScript answers as BFCL asks those models for them: each value as a string of
    source code (BFCL's type converters read it back before comparing)."""
    fn = next((f for f in entry.functions if f["name"] == name), {})
    props = (fn.get("parameters") or {}).get("properties") or {}
    java = entry.category.endswith("java")
    return {k: _source(v, props.get(k, {}), java, top=True) for k, v in args.items()}


def _source(value: Any, spec: dict[str, Any], java: bool, *, top: bool = False) -> str:
    bfcl_type = str(spec.get("type", ""))
    if isinstance(value, str):
        return value if top else json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        suffix = {"long": "L", "float": "f"}.get(bfcl_type, "") if java else ""
        return f"{value}{suffix}"
    item = spec.get("items") or {}
    if isinstance(value, list):
        items = ", ".join(_source(v, item, java) for v in value)
        if not java:
            return f"[{items}]"
        if bfcl_type == "Array":
            return f"new {item.get('type', 'Object')}[]{{{items}}}"
        return f"new ArrayList<>(Arrays.asList({items}))"
    if isinstance(value, dict):
        if not java:
            return "{" + ", ".join(f"{k}: {_source(v, {}, java)}" for k, v in value.items()) + "}"
        puts = " ".join(f"put({json.dumps(k)}, {_source(v, {}, java)});" for k, v in value.items())
        return f"new HashMap<String, Object>() {{{{ {puts} }}}}"
    return json.dumps(value)


def _schema_conflict(entry: BfclEntry, name: str, args: dict[str, Any]) -> str | None:
    """Where BFCL's answer contradicts BFCL's own function schema, said in BFCL's terms."""
    fn = next((f for f in entry.functions if f["name"] == name), None)
    if fn is None:
        return f"{name}: the answer calls a function the entry does not offer"
    params = fn.get("parameters") or {}
    props = params.get("properties") or {}
    missing = [k for k in params.get("required") or [] if k not in args]
    if missing:
        return f"{name}: BFCL's schema requires {missing}, its possible answer may omit them"
    unknown = [k for k in args if k not in props]
    if unknown:
        return f"{name}: the possible answer uses {unknown}, not in BFCL's schema"
    tool = ToolRegistry(tools_for(entry)).get(name)
    converted = tool.parameters.get("properties", {}) if tool is not None else {}
    for key, value in args.items():
        declared = props[key]
        values = value if isinstance(value, list) and declared.get("type") in ("array", "tuple") else [value]
        if "enum" in declared and any(v not in declared["enum"] for v in values):
            return f"{name}.{key}: answer {value!r} is outside BFCL's own enum {declared['enum'][:6]}"
        if key in converted and not _fits(converted[key], value):
            what = "a string (BFCL's checker takes it for a variable name)" if isinstance(value, str) else repr(value)[:80]
            return f"{name}.{key}: answer {what} does not fit BFCL's declared type {declared.get('type')!r}"
    return None


def _fits(schema: dict[str, Any], value: Any) -> bool:
    from jsonschema import Draft202012Validator

    return bool(Draft202012Validator(schema).is_valid(value))


def _relevance_problem(entry: BfclEntry) -> FidelityIssue | None:
    call = render_calls([(entry.functions[0]["name"], _example_arguments(entry.functions[0]))]) if entry.functions else ""
    want_call = entry.category in ANY_CALL_CATEGORIES
    for text, is_call in ((NO_CALL_TEXT, False), (call, True)):
        if not text:
            continue
        verdict = judge_text(entry, text)
        if verdict.ok != (is_call == want_call):
            what = "a call of " + entry.functions[0]["name"] if is_call else "a plain-text answer"
            return FidelityIssue(entry.id, "bfcl_checker", f"{what} judged {verdict.ok} ({verdict.error_type})", False)
    return None


def _example_arguments(fn: dict[str, Any]) -> dict[str, Any]:
    """Required arguments of ``fn`` filled from its own schema (enum, default, or a typed value)."""
    params = fn.get("parameters") or {}
    props = params.get("properties") or {}
    samples = {"integer": 1, "float": 1.5, "number": 1.5, "boolean": True, "array": [], "dict": {}, "tuple": []}
    out: dict[str, Any] = {}
    for key in params.get("required") or []:
        spec = props.get(key, {})
        if spec.get("enum"):
            out[key] = spec["enum"][0]
        elif "default" in spec:
            out[key] = spec["default"]
        else:
            out[key] = samples.get(str(spec.get("type", "string")).lower(), "example")
    return json.loads(json.dumps(out, default=str))
