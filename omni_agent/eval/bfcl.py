"""BFCL (Berkeley Function-Calling Leaderboard) single-turn categories: the functions offered
through the project's schema path and prompt rendering, the answers scored by bfcl_eval's own
AST checker and relevance rule (:mod:`omni_agent.eval.bfcl_checker`) on the calls as written.

Data: the ``bfcl-eval`` package (``pip install --no-deps bfcl-eval``; its full dependency set
pins old numpy and dozens of SDKs, none needed here). Its ``.json`` files are JSON Lines.
Functions use BFCL types (``dict``, ``float``, ``tuple``, ``any``) that :func:`to_json_schema`
turns into JSON Schema; each function then becomes a :class:`Tool` through
:meth:`Tool.from_schema` (which checks the schema), as a user's tool would.

Functions are shown as BFCL shows them (its language hint; Java / JavaScript parameters as
strings holding source), then turned into JSON Schema.

- :func:`score_model`: ask any model backend (one turn, tools offered) and take BFCL's verdict
  on its answer (:func:`judge_text`): no validator coercion ("10" stays a string).
- :func:`bfcl_tasks`: entries as runner tasks whose one check (``type: bfcl``) is the same
  verdict on the model's first turn as written.
- Fidelity (ground truth through parser + validator + BFCL's checker): :mod:`.bfcl_fidelity`.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..exceptions import MissingDependencyError, UserError
from ..prompting import system_with_tools
from ..tool import Tool, ToolOutput
from .bfcl_checker import ANY_CALL_CATEGORIES, NO_CALL_CATEGORIES, bfcl_check, decode_native, decode_text, prompt_functions

__all__ = [
    "SINGLE_TURN_CATEGORIES",
    "BfclEntry",
    "Verdict",
    "bfcl_data_dir",
    "bfcl_tasks",
    "first_answer",
    "entry_by_id",
    "judge_text",
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


@cache
def entry_by_id(category: str, entry_id: str) -> BfclEntry:
    """One entry of a category (the category is read once per process)."""
    entries = {e.id: e for e in load_category(category)}
    if entry_id not in entries:
        raise UserError(f"BFCL {category} has no entry {entry_id!r}")
    return entries[entry_id]


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
    if out.get("type") == "array" and "enum" in out:  # BFCL puts an array's item enum on the array
        out["items"] = {**out.get("items", {}), "enum": out.pop("enum")}
    if bfcl_type.lower() == "tuple" and "items" not in out:
        out["items"] = {}
    return out


def _function_schema(fn: dict[str, Any], category: str) -> dict[str, Any]:
    """One function as offered to the model: BFCL's own pre-processing, then JSON Schema."""
    fn = prompt_functions([fn], category)[0]
    params = to_json_schema(fn.get("parameters") or {"type": "dict", "properties": {}})
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
        key = json.dumps([_language_key(entry.category), fn], sort_keys=True)
        if key not in _TOOL_CACHE:
            _TOOL_CACHE[key] = Tool.from_schema(_function_schema(fn, entry.category), _recorded)
        tools.append(_TOOL_CACHE[key])
    return tools


def _language_key(category: str) -> str:
    return "java" if category.endswith("java") else "javascript" if category.endswith("javascript") else "python"


def render_prompt(entry: BfclEntry, tools: Iterable[Tool]) -> str:
    """The system turn (tools block) and the conversation as Qwen chat text, for inspection and
    completion-style servers."""
    system = next((m["content"] for m in entry.messages if m["role"] == "system"), None)
    parts = [f"<|im_start|>system\n{system_with_tools(system, [t.openai_schema() for t in tools])}<|im_end|>"]
    parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" for m in entry.messages if m["role"] != "system"]
    return "\n".join(parts) + "\n<|im_start|>assistant\n"


# ------------------------------------------------------------------------------------------
# judging one answer: BFCL's own checker on the calls as written
# ------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    ok: bool
    stage: str
    """Where it was decided: "ok", or BFCL's error type family ("ast_decoder", "simple_function_checker",
    "type_error", "value_error", "irrelevance_error", "relevance_error", ...)."""
    reason: str = ""
    error_type: str = ""
    """BFCL's own error type, e.g. ``type_error:simple``."""
    dropped: list[str] = field(default_factory=list)
    """Blocks BFCL's decoding leaves out (not as written), with why."""


def judge_text(entry: BfclEntry, text: str, *, native_raw: list[Any] | None = None) -> Verdict:
    """BFCL's verdict on one answer: the calls as the model wrote them (the server's own
    ``tool_calls`` when it sent any, else the ``<tool_call>`` blocks of ``text``), before any
    coercion, through bfcl_eval's AST checker or its relevance rule."""
    decoded = decode_native(native_raw) if native_raw else decode_text(text or "")
    official = bfcl_check(entry.category, entry.functions, decoded, entry.ground_truth)
    if official.valid:
        return Verdict(True, "ok", dropped=decoded.dropped)
    stage = official.error_type.split(":")[0] or "bfcl"
    reason = official.error
    if decoded.dropped and not decoded.calls:
        reason = f"{reason} (left out: {'; '.join(decoded.dropped)[:300]})"
    return Verdict(False, stage, reason, official.error_type, decoded.dropped)


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
    """Accuracy per category of ``model`` (any backend), BFCL's verdict per entry.

    ``failed_at`` counts failures by BFCL's error type family (``ast_decoder``,
    ``simple_function_checker``, ``type_error``, ``value_error``, ``irrelevance_error``...), plus
    ``model`` for an entry whose request failed (a malformed reply, a refused request): the
    scoring goes on. A model that cannot be reached at all (:class:`ModelUnavailableError`,
    after the backend's own retries) stops it with that error."""
    from ..exceptions import ModelError, ModelUnavailableError

    async def run() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for category in categories:
            entries = load_category(category)[:limit]
            correct, stages = 0, {"model": 0}
            for entry in entries:
                try:
                    response = await _ask(model, entry, tools_for(entry))
                except ModelUnavailableError:
                    raise
                except ModelError:
                    stages["model"] += 1
                    continue
                verdict = judge_text(entry, response.text or "", native_raw=_native_calls(response))
                if verdict.ok:
                    correct += 1
                else:
                    stages[verdict.stage] = stages.get(verdict.stage, 0) + 1
            out[category] = {"entries": len(entries), "correct": correct,
                             "accuracy": round(correct / len(entries), 4) if entries else 0.0, "failed_at": stages}  # fmt: skip
        return out

    return asyncio.run(run())


def _native_calls(response: Any) -> list[Any] | None:
    """The server's own tool calls as it sent them (OpenAI shape), None when it sent none."""
    if response.raw_tool_calls:
        return list(response.raw_tool_calls)
    if response.tool_calls:
        return [{"function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for c in response.tool_calls]
    return None


def first_answer(entry: BfclEntry) -> list[tuple[str, dict[str, Any]]]:
    """BFCL's first acceptable answer, as given: per argument the first listed value (left out
    when that is ``""``, BFCL's "may be omitted"), nested possible answers likewise."""
    return [(name, _first_of_each(args)) for name, args in entry.expected]


def _first_of_each(options_by_key: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, options in options_by_key.items():
        opts = options if isinstance(options, list) else [options]
        if opts and opts[0] != "":
            out[key] = _concrete(opts[0])
    return out


def _concrete(value: Any) -> Any:
    """A possible-answer value -> one concrete value (dicts hold lists of options)."""
    if isinstance(value, dict):
        return _first_of_each(value)
    if isinstance(value, list):
        return [_concrete(v) for v in value]
    return value


def bfcl_tasks(categories: Iterable[str] = ("simple_python",), *, limit: int | None = 20) -> list[Any]:
    """BFCL entries as runner tasks (schema-only functions + a ``bfcl`` check), so
    ``omni-agent eval bfcl --model ...`` runs them with full trajectories and reports; the check
    is BFCL's own verdict on the first turn (:func:`judge_text`)."""
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
            reference = [{"calls": [{"name": n, "arguments": a} for n, a in first_answer(entry)]}] if expected else []
            reference.append({"answer": "done" if expected else "None of the functions fits this request."})
            check = {"type": "bfcl", "category": category, "entry": entry.id}
            tasks.append(
                Task.model_validate({
                    "id": entry.id.replace("_", "-"), "category": f"bfcl-{category}", "instruction": question or "(empty)",
                    "system": system, "functions": schemas, "limits": {"steps": 2, "seconds": 120},
                    "reference": reference, "checks": [check],
                })  # fmt: skip
            )
    return tasks
