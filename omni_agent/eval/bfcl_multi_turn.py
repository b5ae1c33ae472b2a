"""BFCL multi-turn categories: our agent, turn by turn, against BFCL's own simulated APIs (file
system, trading, travel...), scored by bfcl_eval's ``multi_turn_checker`` (state and results
after each turn, compared with BFCL's ground truth run on fresh instances).

Tools run through ``execute_multi_turn_func_call`` on the entry's instances, as BFCL's own
inference does. Functions missing until a turn (``multi_turn_miss_func``) are offered from that
turn on, with BFCL's own notice to the model. The calls handed to the checker are each step's
``<tool_call>`` blocks as written (:func:`.bfcl_checker.decode_text`), in BFCL's call syntax.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..messages import AssistantMessage, Message, SystemMessage, UserMessage
from ..prompting import render_tool_call
from ..tool import Tool, ToolOutput
from .bfcl import _function_schema, bfcl_data_dir
from .bfcl_checker import _bfcl, decode_text

__all__ = ["MULTI_TURN_CATEGORIES", "MultiTurnVerdict", "fidelity_entry", "ground_truth_outputs", "load_multi_turn", "run_entry", "score_multi_turn"]

MULTI_TURN_CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")


def load_multi_turn(category: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries with their function docs (BFCL's own population) and ground truth."""
    _bfcl()
    from bfcl_eval.utils import populate_test_cases_with_predefined_functions

    root = bfcl_data_dir()
    lines = (root / f"BFCL_v4_{category}.json").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()][:limit]
    answers = {}
    for line in (root / "possible_answer" / f"BFCL_v4_{category}.json").read_text(encoding="utf-8").splitlines():
        if line.strip():
            a = json.loads(line)
            answers[a["id"]] = a["ground_truth"]
    entries = populate_test_cases_with_predefined_functions(entries)
    for e in entries:
        e["ground_truth"] = answers[e["id"]]
    return entries


@dataclass
class MultiTurnVerdict:
    id: str
    valid: bool
    error_type: str = ""
    error: str = ""
    calls: list[list[list[str]]] = field(default_factory=list)
    """Per turn, per step: the calls as written, in BFCL's syntax (what the checker ran)."""


def _executor(entry: dict[str, Any], run_name: str) -> Any:
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call

    def execute(call: str) -> str:
        results, _ = execute_multi_turn_func_call(
            [call], entry["initial_config"], entry["involved_classes"], run_name, entry["id"],
            long_context="long_context" in entry["id"], is_evaL_run=False,
        )  # fmt: skip
        return str(results[0])

    return execute


def _tool(fn: dict[str, Any], category: str, execute: Any) -> Tool:
    from bfcl_eval.model_handler.utils import convert_to_function_call

    def call(**arguments: Any) -> ToolOutput:
        text = execute(convert_to_function_call([{fn["name"]: arguments}])[0])
        return ToolOutput(text=text, is_error=text.startswith("Error during execution"))

    return Tool.from_schema(_function_schema(fn, category), call)


def _written_calls(messages: list[Message]) -> list[list[str]]:
    """This turn's steps (after its user message) as BFCL call strings, as written."""
    from bfcl_eval.model_handler.utils import convert_to_function_call

    last_user = max(i for i, m in enumerate(messages) if isinstance(m, UserMessage))
    steps = []
    for m in messages[last_user + 1 :]:
        if isinstance(m, AssistantMessage) and m.raw_text:
            calls = decode_text(m.raw_text).calls
            if calls:
                steps.append(convert_to_function_call(calls))
    return steps


async def run_entry(entry: dict[str, Any], model: Any, *, max_steps: int = 20) -> MultiTurnVerdict:
    """All turns of one entry with ``model`` as the assistant, then BFCL's verdict. ``max_steps``
    per turn: 20, BFCL's own limit."""
    from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    from ..loop import Agent
    from ..policy import allow_all

    category = entry["id"].rsplit("_", 1)[0]
    run_name = f"omni_{uuid.uuid4().hex[:12]}"
    execute = _executor(entry, run_name)
    excluded = set(entry.get("excluded_function") or [])
    offered = [fn for fn in entry["function"] if fn["name"] not in excluded]
    history: list[Message] = []
    decoded: list[list[list[str]]] = []
    for turn, messages in enumerate(entry["question"]):
        added = (entry.get("missed_function") or {}).get(str(turn), [])
        offered += added
        text = "\n".join(m["content"] for m in messages if m["role"] == "user")
        if not text and added:
            text = DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC
        tools = [_tool(fn, category, execute) for fn in offered]
        agent = Agent(model, tools, max_steps=max_steps, approver=allow_all)  # BFCL's APIs are simulated in memory
        result = await agent.arun(text or "(continue)", history=history)
        history = [m for m in result.messages if not isinstance(m, SystemMessage)]
        decoded.append(_written_calls(result.messages))
    checked = multi_turn_checker(decoded, entry["ground_truth"], copy.deepcopy(entry), category, run_name)
    return MultiTurnVerdict(entry["id"], bool(checked["valid"]), str(checked.get("error_type", "")),
                            str(checked.get("error_message", ""))[:500], decoded)  # fmt: skip


def _parse_call(call: str, entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A ground-truth call string (``mv(source='a', destination='b')``) -> name and arguments;
    positional arguments take the function's parameter names in order."""
    node = ast.parse(call, mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain call: {call}")
    name = node.func.id
    fn = next(f for f in entry["function"] + [d for docs in (entry.get("missed_function") or {}).values() for d in docs] if f["name"] == name)
    params = list(fn["parameters"]["properties"])
    args = {params[i]: ast.literal_eval(a) for i, a in enumerate(node.args)}
    args.update({k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg})
    return name, args


def ground_truth_outputs(entry: dict[str, Any]) -> list[str]:
    """BFCL's ground truth as Qwen output: each call one step, then a short answer per turn."""
    outputs = []
    for turn in entry["ground_truth"]:
        outputs += [render_tool_call(*_parse_call(call, entry)) for call in turn]
        outputs.append("Done.")
    return outputs


def fidelity_entry(entry: dict[str, Any]) -> MultiTurnVerdict:
    from ..models.scripted import ScriptedModel

    # one call per step: a turn of BFCL's ground truth may hold more calls than a model's 20 steps
    steps = max(20, *(len(turn) + 1 for turn in entry["ground_truth"]))
    return asyncio.run(run_entry(entry, ScriptedModel(ground_truth_outputs(entry), name="bfcl-ground-truth"), max_steps=steps))


def score_multi_turn(model: Any, categories: list[str], *, limit: int | None = None) -> dict[str, dict[str, Any]]:
    """Accuracy per multi-turn category of ``model``; failures counted by BFCL's error type."""

    async def run() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for category in categories:
            entries = load_multi_turn(category, limit=limit)
            correct, failed_at = 0, {}
            for entry in entries:
                verdict = await run_entry(entry, model)
                correct += verdict.valid
                if not verdict.valid:
                    failed_at[verdict.error_type] = failed_at.get(verdict.error_type, 0) + 1
            out[category] = {"entries": len(entries), "correct": correct,
                             "accuracy": round(correct / len(entries), 4) if entries else 0.0, "failed_at": failed_at}  # fmt: skip
        return out

    return asyncio.run(run())
