"""BFCL (Berkeley Function-Calling Leaderboard) single-turn categories through the project's own
schema path, prompt rendering, parser and validator, scored with BFCL's AST semantics.

Data: the ``bfcl-eval`` package (``pip install --no-deps bfcl-eval``; its full dependency set
pins old numpy and dozens of SDKs, none needed here). Its ``.json`` files are JSON Lines.
Functions use BFCL types (``dict``, ``float``, ``tuple``, ``any``) that :func:`to_json_schema`
turns into JSON Schema; each function then becomes a :class:`Tool` through
:meth:`Tool.from_schema` (which checks the schema), as a user's tool would.

Two modes:
- :func:`score_model`: ask any model backend (one turn, tools offered), parse the answer with
  the project's parser, validate, and match against BFCL's possible answers
  (:mod:`omni_agent.eval.matching`); irrelevance = no call, relevance = some call.
- :func:`fidelity`: render BFCL's own ground-truth answers as Qwen ``<tool_call>`` text and
  require parser + validator + matcher to accept all of them, and to reject deliberately broken
  variants (unknown name, missing required argument, wrong type, unexpected argument, wrong
  value, arguments that are not an object), per category.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import MissingDependencyError, UserError
from ..messages import ToolCall
from ..prompting import render_tool_call, system_with_tools
from ..registry import ToolRegistry
from ..tool import Tool, ToolOutput
from .matching import match_calls, value_matches

__all__ = [
    "BfclEntry",
    "CategoryFidelity",
    "SINGLE_TURN_CATEGORIES",
    "bfcl_data_dir",
    "bfcl_tasks",
    "fidelity",
    "load_category",
    "render_prompt",
    "score_model",
    "to_json_schema",
    "tools_for",
]

SINGLE_TURN_CATEGORIES = (
    "simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple",
    "irrelevance", "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
    "live_irrelevance", "live_relevance",
)  # fmt: skip
NO_CALL_CATEGORIES = frozenset({"irrelevance", "live_irrelevance"})
ANY_CALL_CATEGORIES = frozenset({"live_relevance"})
STRING_TYPED: frozenset[str] = frozenset()
"""Categories whose values are rendered as source strings. BFCL's own pipeline asks Java and
JavaScript models for strings and converts them back to typed values before matching; its
possible answers are typed, so here Java/JavaScript types map to JSON types instead (the
validator still turns "true" or a JSON string into the declared type)."""

_TYPES = {
    "dict": "object", "object": "object", "float": "number", "double": "number", "number": "number",
    "integer": "integer", "int": "integer", "long": "integer", "string": "string", "str": "string",
    "boolean": "boolean", "bool": "boolean", "array": "array", "list": "array", "tuple": "array",
    "arraylist": "array", "hashmap": "object", "map": "object", "bigint": "integer",
}  # fmt: skip
"""BFCL type names (Python, Java and JavaScript flavours, compared lower-case) -> JSON Schema."""


def bfcl_data_dir() -> Path:
    """The data folder of the installed ``bfcl-eval`` package (found without importing it)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("bfcl-eval", "eval")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not data.is_dir():
        raise UserError(f"bfcl-eval is installed but has no data folder at {data}")
    return data


@dataclass
class BfclEntry:
    id: str
    category: str
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    ground_truth: list[dict[str, dict[str, list[Any]]]] | None = None

    @property
    def expected(self) -> list[tuple[str, dict[str, list[Any]]]]:
        return [(name, args) for call in self.ground_truth or [] for name, args in call.items()]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_category(category: str, *, data_dir: Path | None = None) -> list[BfclEntry]:
    """Entries of one single-turn category, with their possible answers where BFCL has them."""
    if category not in SINGLE_TURN_CATEGORIES:
        raise UserError(f"unknown BFCL category {category!r}; single-turn ones: {', '.join(SINGLE_TURN_CATEGORIES)}")
    root = data_dir or bfcl_data_dir()
    entries = _jsonl(root / f"BFCL_v4_{category}.json")
    answers_path = root / "possible_answer" / f"BFCL_v4_{category}.json"
    answers = {a["id"]: a["ground_truth"] for a in _jsonl(answers_path)} if answers_path.exists() else {}
    out = []
    for e in entries:
        turns = e["question"]
        messages = turns[0] if turns and isinstance(turns[0], list) else turns
        out.append(BfclEntry(e["id"], category, list(messages), list(e["function"]), answers.get(e["id"])))
    return out


def to_json_schema(node: Any, *, string_typed: bool = False) -> Any:
    """A BFCL parameter schema -> JSON Schema (recursively). ``string_typed``: Java / JavaScript
    entries, whose values BFCL passes as source-code strings (as BFCL's own pre-processing does)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type":
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {k: to_json_schema(v, string_typed=string_typed) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value, string_typed=string_typed)
        elif key == "required" and isinstance(value, list):
            out[key] = list(value)
        else:
            out[key] = copy.deepcopy(value)
    bfcl_type = str(node.get("type", "")).strip()
    if string_typed and "properties" not in node:
        out["type"] = "string"
        if bfcl_type and bfcl_type.lower() not in ("string", "str"):
            note = f" This is a {bfcl_type} type parameter in string representation."
            out["description"] = (out.get("description") or "") + note
        out.pop("items", None)
        return out
    mapped = _TYPES.get(bfcl_type.lower()) if bfcl_type else None
    if mapped:
        out["type"] = mapped
    elif bfcl_type and bfcl_type.lower() != "any":
        out["type"] = "string"  # Java / JavaScript scalars (String, char, ...) arrive as text
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("required", [])
    if "enum" in out and out.get("type") in ("integer", "number", "boolean", "string"):
        pass
    if bfcl_type.lower() == "tuple" and "items" not in out:
        out["items"] = {}
    return out


def _function_schema(fn: dict[str, Any], category: str) -> dict[str, Any]:
    params = to_json_schema(fn.get("parameters") or {"type": "dict", "properties": {}}, string_typed=category in STRING_TYPED)
    params["type"] = "object"
    params.setdefault("properties", {})
    # BFCL schemas list optional arguments in properties; arguments outside them are mistakes.
    params.setdefault("additionalProperties", False)
    return {"name": fn["name"], "description": fn.get("description", ""), "parameters": params}


def _recorded(**arguments: Any) -> ToolOutput:
    return ToolOutput(text="recorded")


_TOOL_CACHE: dict[str, Tool] = {}


def tools_for(entry: BfclEntry) -> list[Tool]:
    """The entry's functions as schema-only Tools (through :meth:`Tool.from_schema`). Live
    categories repeat the same functions across entries: each distinct one is built once."""
    tools = []
    for fn in entry.functions:
        key = json.dumps([entry.category in STRING_TYPED, fn], sort_keys=True)
        if key not in _TOOL_CACHE:
            _TOOL_CACHE[key] = Tool.from_schema(_function_schema(fn, entry.category), _recorded)
        tools.append(_TOOL_CACHE[key])
    return tools


def render_prompt(entry: BfclEntry, tools: Iterable[Tool]) -> str:
    """The system turn (tools block) and the conversation as Qwen chat text, for inspection and
    completion-style servers."""
    system = next((m["content"] for m in entry.messages if m["role"] == "system"), None)
    parts = [f"<|im_start|>system\n{system_with_tools(system, [t.openai_schema() for t in tools])}<|im_end|>"]
    parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" for m in entry.messages if m["role"] != "system"]
    return "\n".join(parts) + "\n<|im_start|>assistant\n"


# ------------------------------------------------------------------------------------------
# judging one answer
# ------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    ok: bool
    stage: str
    """Where it was decided: "parse", "validate", "match" or "ok"."""
    reason: str = ""


def judge_text(
    entry: BfclEntry, text: str, registry: ToolRegistry, *, native: list[ToolCall] | None = None,
    native_problems: Iterable[Any] = (),
) -> Verdict:  # fmt: skip
    """Parse ``text``, add the server's native calls (as the agent loop does: a server may parse
    the calls and also leave them in the text, so one copy is kept), validate every call, match
    BFCL's answer."""
    from ..parsing import parse_output
    from ..validation import validate_call

    parsed = parse_output(text)
    calls = list(parsed.calls)
    problems = [p for p in [*parsed.problems, *native_problems] if p.fatal]
    if native:
        seen = {_call_key(c) for c in native}
        calls = [*native, *(c for c in calls if _call_key(c) not in seen)]
    if problems:
        return Verdict(False, "parse", problems[0].message)
    if entry.category in NO_CALL_CATEGORIES:
        return Verdict(not calls, "match" if calls else "ok", f"expected no call, got {[c.name for c in calls]}" if calls else "")
    checked = []
    for call in calls:
        v = validate_call(call, registry)
        if not v.ok:
            return Verdict(False, "validate", v.message)
        checked.append(v.call)
    if entry.category in ANY_CALL_CATEGORIES:
        return Verdict(bool(checked), "ok" if checked else "match", "" if checked else "expected a call")
    m = match_calls(checked, entry.expected)
    return Verdict(m.ok, "ok" if m.ok else "match", m.reason)


def _call_key(call: ToolCall) -> str:
    return json.dumps([call.name, call.arguments], sort_keys=True, default=str)


# ------------------------------------------------------------------------------------------
# fidelity mode
# ------------------------------------------------------------------------------------------
def _first_answer(
    expected: list[tuple[str, dict[str, list[Any]]]], registry: ToolRegistry | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """One concrete answer: per argument the first acceptable value that fits the function's
    schema (omitted when "" is acceptable and nothing else fits). Without a registry: the first
    non-omitted value."""
    calls = []
    for name, args in expected:
        tool = registry.get(name) if registry is not None else None
        props = tool.parameters.get("properties", {}) if tool is not None else {}
        chosen = {}
        for key, options in args.items():
            real = [_first_value(o) for o in options if o != "" and o is not None]
            fitting = [v for v in real if tool is None or _fits(props.get(key), v)]
            if fitting:
                chosen[key] = fitting[0]
            elif real and "" not in options:
                chosen[key] = real[0]  # nothing fits: a ground truth at odds with its schema
        calls.append((name, chosen))
    return calls


_VALIDATORS: dict[str, Any] = {}


def _fits(schema: dict[str, Any] | None, value: Any) -> bool:
    if schema is None:
        return False
    key = json.dumps(schema, sort_keys=True)
    validator = _VALIDATORS.get(key)
    if validator is None:
        from jsonschema import Draft202012Validator

        validator = _VALIDATORS[key] = Draft202012Validator(schema)
    return bool(validator.is_valid(value))


def schema_conflicts(entry: BfclEntry, registry: ToolRegistry) -> list[str]:
    """Where BFCL's ground truth contradicts its own function schema (an argument the schema
    does not declare, or a required value no acceptable option fits): such an answer cannot be
    both correct and schema-valid, so fidelity reports it apart instead of counting it."""
    problems = []
    for name, args in entry.expected:
        tool = registry.get(name)
        if tool is None:
            problems.append(f"{name}: function not offered")
            continue
        props = tool.parameters.get("properties", {})
        for key in tool.parameters.get("required", []):
            if key not in args or all(o == "" for o in args[key]):
                problems.append(f"{name}.{key}: required by the schema, may be omitted by the ground truth")
        for key, options in args.items():
            if key not in props:
                problems.append(f"{name}.{key}: not in the schema")
                continue
            real = [_first_value(o) for o in options if o != "" and o is not None]
            if "" not in options and not any(_fits(props[key], v) for v in real):
                problems.append(f"{name}.{key}: no acceptable value fits {json.dumps(props[key].get('type'))}: {real[:2]!r}")
    return problems


def _first_value(value: Any) -> Any:
    """Nested possible answers (dicts of lists of options) -> one concrete value."""
    if isinstance(value, dict):
        out = {}
        for k, options in value.items():
            opts = options if isinstance(options, list) else [options]
            real = [o for o in opts if o != ""]
            if real:
                out[k] = _first_value(real[0])
        return out
    if isinstance(value, list):
        return [_first_value(v) for v in value]
    return value


def _render(calls: list[tuple[str, Any]]) -> str:
    return "\n".join(render_tool_call(name, args) for name, args in calls)


def _wrong_type_value(schema: dict[str, Any]) -> Any:
    t = schema.get("type")
    if t in ("integer", "number", "boolean", "array"):
        return {"not": "a " + t}
    if t == "object":
        return "not an object"
    if t == "string":
        return {"not": "a string"}
    return None


def broken_variants(entry: BfclEntry, registry: ToolRegistry) -> dict[str, str]:
    """Deliberately broken renderings of the entry's first ground-truth answer, by kind."""
    calls = _first_answer(entry.expected, registry)
    if not calls:
        return {}
    name, args = calls[0]
    tool = registry.get(name) if hasattr(registry, "get") else None
    schema = tool.parameters if tool is not None else {"properties": {}}
    props = schema.get("properties", {})
    required = [r for r in schema.get("required", []) if r in args]
    variants: dict[str, str] = {}
    variants["unknown_name"] = _render([(name + "_nonexistent", args)] + calls[1:])
    if required:
        dropped = {k: v for k, v in args.items() if k != required[0]}
        variants["missing_required"] = _render([(name, dropped)] + calls[1:])
    for key, value in args.items():
        bad = _wrong_type_value(props.get(key, {}))
        if bad is not None:
            variants["wrong_type"] = _render([(name, {**args, key: bad})] + calls[1:])
            break
    variants["unexpected_argument"] = _render([(name, {**args, "zz_unexpected_argument": 1})] + calls[1:])
    acceptable = entry.expected[0][1]
    for key, value in args.items():
        changed = _changed_value(value, props.get(key, {}))
        options = acceptable.get(key, [])
        if changed is not None and not any(value_matches(changed, o) for o in options if o != ""):
            variants["wrong_value"] = _render([(name, {**args, key: changed})] + calls[1:])
            break
    variants["arguments_not_object"] = _render([(name, json.dumps(list(args.values())))] + calls[1:])
    return variants


def _changed_value(value: Any, schema: dict[str, Any]) -> Any:
    """A value of the same type that is not acceptable (outside any enum it must stay inside)."""
    if "enum" in schema:
        others = [v for v in schema["enum"] if v != value]
        return others[0] if others else None
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7919
    if isinstance(value, float):
        return value + 7919.5
    if isinstance(value, str):
        return value + " zq-changed"
    if isinstance(value, list) and value:
        first = _changed_value(value[0], schema.get("items", {}))
        return [first, *value[1:]] if first is not None else None
    return None


@dataclass
class CategoryFidelity:
    category: str
    entries: int = 0
    accepted: int = 0
    variants: int = 0
    rejected: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    """kind -> [variants, rejected]."""
    failures: list[str] = field(default_factory=list)
    schema_conflicts: list[str] = field(default_factory=list)
    """Entries left out: BFCL's ground truth contradicts the entry's own schema."""

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.entries if self.entries else 1.0

    @property
    def reject_rate(self) -> float:
        return self.rejected / self.variants if self.variants else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category, "entries": self.entries, "accepted": self.accepted,
            "accept_rate": round(self.accept_rate, 4), "variants": self.variants, "rejected": self.rejected,
            "reject_rate": round(self.reject_rate, 4), "by_kind": self.by_kind, "failures": self.failures[:20],
            "schema_conflicts": len(self.schema_conflicts), "schema_conflict_examples": self.schema_conflicts[:5],
        }  # fmt: skip


def fidelity(categories: Iterable[str] = SINGLE_TURN_CATEGORIES, *, limit: int | None = None) -> dict[str, CategoryFidelity]:
    """Ground truth rendered as ``<tool_call>`` text must be accepted; broken variants rejected."""
    report: dict[str, CategoryFidelity] = {}
    for category in categories:
        fid = CategoryFidelity(category)
        for entry in load_category(category)[:limit]:
            registry = ToolRegistry(tools_for(entry))
            fid.entries += 1
            if category in NO_CALL_CATEGORIES or category in ANY_CALL_CATEGORIES:
                # No ground truth here: a plain-text answer (no call) vs a call of the first function.
                first = entry.functions[0]["name"] if entry.functions else "any_function"
                good, bad = ("I cannot help with that using these functions.", _render([(first, {})]))
                if category in ANY_CALL_CATEGORIES:
                    good, bad = _render([(first, {})]), "No function fits."
                    verdict = _judge_relevance(good)
                    bad_verdict = _judge_relevance(bad)
                else:
                    verdict = judge_text(entry, good, registry)
                    bad_verdict = judge_text(entry, bad, registry)
                _tally(fid, entry, verdict, {"call_when_none_expected" if category in NO_CALL_CATEGORIES else "no_call": bad_verdict})
                continue
            conflicts = schema_conflicts(entry, registry)
            if conflicts:
                fid.entries -= 1
                fid.schema_conflicts.append(f"{entry.id}: {'; '.join(conflicts)}")
                continue
            text = _render(_first_answer(entry.expected, registry))
            verdict = judge_text(entry, text, registry)
            broken = {kind: judge_text(entry, t, registry) for kind, t in broken_variants(entry, registry).items()}
            _tally(fid, entry, verdict, broken)
        report[category] = fid
    return report


def _judge_relevance(text: str) -> Verdict:
    from ..parsing import parse_output

    calls = parse_output(text).calls
    return Verdict(bool(calls), "ok" if calls else "match", "" if calls else "expected a call")


def _tally(fid: CategoryFidelity, entry: BfclEntry, verdict: Verdict, broken: dict[str, Verdict]) -> None:
    if verdict.ok:
        fid.accepted += 1
    else:
        fid.failures.append(f"{entry.id}: ground truth rejected at {verdict.stage}: {verdict.reason}")
    for kind, v in broken.items():
        counts = fid.by_kind.setdefault(kind, [0, 0])
        counts[0] += 1
        fid.variants += 1
        if not v.ok:
            counts[1] += 1
            fid.rejected += 1
        else:
            fid.failures.append(f"{entry.id}: broken variant {kind!r} was accepted")


# ------------------------------------------------------------------------------------------
# scoring a model
# ------------------------------------------------------------------------------------------
async def _ask(model: Any, entry: BfclEntry, tools: list[Tool]) -> Any:
    from ..messages import AssistantMessage, SystemMessage, UserMessage
    from ..models.base import ModelRequest

    roles = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
    messages = [roles[m["role"]](m["content"]) for m in entry.messages if m["role"] in roles]
    return await model.complete(ModelRequest(messages=messages, tools=[t.openai_schema() for t in tools]))


def score_model(model: Any, categories: Iterable[str], *, limit: int | None = None) -> dict[str, dict[str, Any]]:
    """Accuracy per category of ``model`` (any backend) with BFCL's semantics.

    A model error on one entry (a malformed reply, a refused request) counts as that entry
    failed at stage ``model`` and the scoring goes on; a model that cannot be reached at all
    (:class:`ModelUnavailableError`, after the backend's own retries) stops it with that error."""
    from ..exceptions import ModelError, ModelUnavailableError
    from ..parsing import calls_from_openai

    async def run() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for category in categories:
            entries = load_category(category)[:limit]
            correct, stages = 0, {"model": 0, "parse": 0, "validate": 0, "match": 0}
            for entry in entries:
                tools = tools_for(entry)
                try:
                    response = await _ask(model, entry, tools)
                except ModelUnavailableError:
                    raise
                except ModelError:
                    stages["model"] += 1
                    continue
                # Native calls (a server with a tool parser) arrive unparsed in raw_tool_calls.
                native, native_problems = list(response.tool_calls or []), []
                if response.raw_tool_calls:
                    native, native_problems = calls_from_openai(response.raw_tool_calls)
                verdict = judge_text(
                    entry, response.text, ToolRegistry(tools), native=native, native_problems=native_problems
                )
                if verdict.ok:
                    correct += 1
                else:
                    stages[verdict.stage] = stages.get(verdict.stage, 0) + 1
            out[category] = {"entries": len(entries), "correct": correct,
                             "accuracy": round(correct / len(entries), 4) if entries else 0.0, "failed_at": stages}  # fmt: skip
        return out

    return asyncio.run(run())


def bfcl_tasks(categories: Iterable[str] = ("simple_python",), *, limit: int | None = 20) -> list[Any]:
    """BFCL entries as runner tasks (schema-only functions + a ``tool_calls`` check), so
    ``omni-agent eval bfcl --model ...`` runs them with full trajectories and reports."""
    from .task import Task

    tasks = []
    for category in categories:
        for entry in load_category(category)[:limit]:
            if category in ANY_CALL_CATEGORIES:
                continue  # "some call" has no tool_calls check form; use score_model for it
            schemas = [{"type": "function", "function": _function_schema(fn, category)} for fn in entry.functions]
            expected = [] if category in NO_CALL_CATEGORIES else [{"name": n, "arguments": a} for n, a in entry.expected]
            question = "\n".join(m["content"] for m in entry.messages if m["role"] == "user")
            system = next((m["content"] for m in entry.messages if m["role"] == "system"), None)
            registry = ToolRegistry(tools_for(entry))
            reference = [{"calls": [{"name": n, "arguments": a} for n, a in _first_answer(entry.expected, registry)]}] if expected else []
            reference.append({"answer": "done" if expected else "None of the functions fits this request."})
            tasks.append(
                Task.model_validate({
                    "id": entry.id.replace("_", "-"), "category": f"bfcl-{category}", "instruction": question or "(empty)",
                    "system": system, "functions": schemas, "limits": {"steps": 2, "seconds": 120},
                    "reference": reference, "checks": [{"type": "tool_calls", "expected": expected, "step": 1}],
                })  # fmt: skip
            )
    return tasks
