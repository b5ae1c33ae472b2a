"""BFCL: type conversion through the project's schema path, and fidelity over all single-turn
categories (ground truth accepted 100%, every broken variant rejected, per category)."""

from __future__ import annotations

import pytest

pytest.importorskip("bfcl_eval", reason="scripts/setup.sh installs bfcl-eval (pip install --no-deps bfcl-eval)")

from omni_agent.eval.bfcl import (  # noqa: E402
    SINGLE_TURN_CATEGORIES,
    BfclEntry,
    bfcl_tasks,
    fidelity,
    judge_text,
    load_category,
    render_prompt,
    to_json_schema,
    tools_for,
)
from omni_agent.registry import ToolRegistry  # noqa: E402


def test_bfcl_types_become_json_schema() -> None:
    bfcl = {
        "type": "dict",
        "properties": {
            "a": {"type": "float"}, "b": {"type": "tuple", "items": {"type": "integer"}},
            "c": {"type": "any"}, "d": {"type": "dict", "properties": {"x": {"type": "string"}}},
            "e": {"type": "HashMap"}, "f": {"type": "String"},
        },
        "required": ["a"],
    }  # fmt: skip
    s = to_json_schema(bfcl)
    assert s["type"] == "object" and s["required"] == ["a"]
    p = s["properties"]
    assert p["a"] == {"type": "number"} and p["b"] == {"type": "array", "items": {"type": "integer"}}
    assert "type" not in p["c"] and p["d"]["type"] == "object" and p["e"]["type"] == "object"
    assert p["f"]["type"] == "string"


def test_prompt_and_judging_use_the_project_pipeline() -> None:
    entry = load_category("simple_python")[0]
    tools = tools_for(entry)
    prompt = render_prompt(entry, tools)
    assert "# Tools" in prompt and "<tools>" in prompt and entry.messages[0]["content"] in prompt
    reg = ToolRegistry(tools)
    good = '<tool_call>\n{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}\n</tool_call>'
    assert judge_text(entry, good, reg).ok
    assert judge_text(entry, good.replace("10", '"ten"'), reg).stage == "validate"
    assert judge_text(entry, good.replace("10", "12"), reg).stage == "match"
    assert not judge_text(entry, "The area is 25.", reg).ok
    irrelevant = BfclEntry("x", "irrelevance", entry.messages, entry.functions)
    assert judge_text(irrelevant, "I cannot do that.", reg).ok and not judge_text(irrelevant, good, reg).ok


def test_fidelity_all_single_turn_categories() -> None:
    report = fidelity(SINGLE_TURN_CATEGORIES)
    assert set(report) == set(SINGLE_TURN_CATEGORIES)
    for cat, f in report.items():
        assert f.entries > 0, cat
        assert f.accepted == f.entries, (cat, f.failures[:3])
        assert f.variants >= f.entries and f.rejected == f.variants, (cat, f.failures[:3])
    # the six kinds of breakage are all exercised where ground truth exists
    kinds = set(report["simple_python"].by_kind)
    assert {"unknown_name", "missing_required", "wrong_type", "unexpected_argument", "wrong_value", "arguments_not_object"} <= kinds
    # entries left out for contradicting their own schema stay a small, listed minority
    total = sum(f.entries for f in report.values())
    conflicts = sum(len(f.schema_conflicts) for f in report.values())
    assert total > 3500 and conflicts < 0.02 * total


def test_bfcl_entries_as_runner_tasks() -> None:
    tasks = bfcl_tasks(["simple_python", "irrelevance"], limit=2)
    assert len(tasks) == 4
    assert tasks[0].functions and tasks[0].checks[0].type == "tool_calls" and tasks[0].reference[0].calls
    assert tasks[-1].checks[0].expected == []


def test_score_model_end_to_end_over_http(openai_server) -> None:
    """A real backend (OpenAI protocol over HTTP): native calls, Qwen text calls, and a broken
    reply, which counts as that entry failed at "model" instead of ending the scoring."""
    from omni_agent.eval.bfcl import score_model
    from omni_agent.models.spec import load_model

    native = [{"id": "c1", "type": "function", "function": {"name": "calculate_triangle_area", "arguments": '{"base": 10, "height": 5}'}}]
    openai_server.reply_chat(None, tool_calls=native)  # simple_python_0: right
    openai_server.reply_chat('<tool_call>\n{"name": "math.factorial", "arguments": {"number": 6}}\n</tool_call>')  # _1: wrong value
    openai_server.reply_raw("{not json")  # _2: a broken reply
    openai_server.reply_chat("None of these functions can do that.")  # irrelevance_0: right (no call)
    model = load_model(f"openai:{openai_server.base_url}#m?max_retries=0")
    scores = score_model(model, ["simple_python"], limit=3) | score_model(model, ["irrelevance"], limit=1)
    assert scores["simple_python"] == {"entries": 3, "correct": 1, "accuracy": 0.3333,
                                       "failed_at": {"model": 1, "parse": 0, "validate": 0, "match": 1}}  # fmt: skip
    assert scores["irrelevance"]["correct"] == 1
    sent = openai_server.chat_requests()[0].json
    assert [t["function"]["name"] for t in sent["tools"]] == ["calculate_triangle_area"]
    assert sent["tools"][0]["function"]["parameters"]["properties"]["base"]["type"] == "integer"
