"""BFCL: functions offered as BFCL offers them, answers scored by bfcl_eval's own checker on the
calls as written (no validator coercion), verdict parity with bfcl_eval's own runner path, and
fidelity over all single-turn categories with every exception listed in the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

from omni_agent.eval.bfcl import (
    SINGLE_TURN_CATEGORIES,
    BfclEntry,
    bfcl_tasks,
    judge_text,
    load_category,
    render_prompt,
    to_json_schema,
    tools_for,
)
from omni_agent.eval.bfcl_checker import decode_native, decode_text
from omni_agent.eval.bfcl_fidelity import fidelity
from omni_agent.eval.bfcl_parity import model_style_outputs, parity

GOOD = '<tool_call>\n{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}\n</tool_call>'


def test_bfcl_types_become_json_schema() -> None:
    bfcl = {
        "type": "dict",
        "properties": {
            "a": {"type": "float"}, "b": {"type": "tuple", "items": {"type": "integer"}},
            "c": {"type": "any"}, "d": {"type": "dict", "properties": {"x": {"type": "string"}}},
            "e": {"type": "HashMap"}, "f": {"type": "String"},
            "g": {"type": "array", "items": {"type": "string"}, "enum": ["x", "y"]},
        },
        "required": ["a"],
    }  # fmt: skip
    s = to_json_schema(bfcl)
    assert s["type"] == "object" and s["required"] == ["a"]
    p = s["properties"]
    assert p["a"] == {"type": "number"} and p["b"] == {"type": "array", "items": {"type": "integer"}}
    assert "type" not in p["c"] and p["d"]["type"] == "object" and p["e"]["type"] == "object"
    assert p["f"]["type"] == "string"
    assert p["g"] == {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}}  # BFCL's enum is per item


def test_functions_are_offered_as_bfcl_offers_them() -> None:
    entry = load_category("simple_python")[0]
    prompt = render_prompt(entry, tools_for(entry))
    assert "# Tools" in prompt and entry.messages[0]["content"] in prompt
    assert "Note that the provided function is in Python 3 syntax." in prompt  # BFCL's own hint
    java = tools_for(load_category("simple_java")[1])[0].parameters["properties"]
    assert {p["type"] for p in java.values()} == {"string"}  # Java values are source strings
    assert any("in string representation" in p["description"] for p in java.values())


def test_bfcl_checker_scores_the_calls_as_written() -> None:
    entry = load_category("simple_python")[0]
    assert judge_text(entry, GOOD).ok
    as_string = judge_text(entry, GOOD.replace("10", '"10"'))  # the validator would coerce this
    assert not as_string.ok and as_string.error_type == "type_error:simple"
    wrong = judge_text(entry, GOOD.replace("10", "12"))
    assert not wrong.ok and wrong.error_type.startswith("value_error")
    assert judge_text(entry, "The area is 25.").error_type == "simple_function_checker:wrong_count"
    # a block our parser had to repair is not what BFCL reads: left out, as BFCL's Qwen handler does
    repaired = GOOD.replace('"arguments": {"base": 10, "height": 5}', "'arguments': {'base': 10, 'height': 5}")
    assert decode_text(repaired).calls == [] and decode_text(repaired).dropped
    assert not judge_text(entry, repaired).ok
    # a server's own tool_calls: arguments read with json.loads, no repair either
    native = [{"function": {"name": "calculate_triangle_area", "arguments": '{"base": 10, "height": 5}'}}]
    assert judge_text(entry, "", native_raw=native).ok
    assert decode_native([{"function": {"name": "f", "arguments": "{bad"}}]).dropped
    irrelevant = BfclEntry("x", "irrelevance", entry.messages, entry.functions)
    assert judge_text(irrelevant, "I cannot do that.").ok
    verdict = judge_text(irrelevant, GOOD)
    assert not verdict.ok and verdict.error_type == "irrelevance_error:decoder_success"
    assert judge_text(irrelevant, f"<think>\n{GOOD}\n</think>\nNo function fits.").ok  # thinking is not a call


def test_verdict_parity_with_bfcl_eval_runner() -> None:
    cases = model_style_outputs(SINGLE_TURN_CATEGORIES, per_category=3)
    kinds = {c.kind for c in cases}
    assert len(cases) >= 300
    assert {"int_as_string", "int_as_float", "json_in_string", "arguments_as_json_string", "single_quoted_json"} <= kinds
    rows = parity(cases)
    different = [r for r in rows if r.ours != r.bfcl]
    assert not different, different[:5]
    assert {r.bfcl for r in rows} == {True, False}
    assert not any(r.bfcl for r in rows if r.kind == "int_as_string")  # BFCL rejects what we used to coerce


def test_fidelity_every_exception_is_listed_in_the_readme() -> None:
    report = fidelity(SINGLE_TURN_CATEGORIES)
    assert set(report) == set(SINGLE_TURN_CATEGORIES)
    total = sum(f.entries for f in report.values())
    passed = sum(f.passed for f in report.values())
    assert total > 3500 and all(f.passed + len(f.exceptions) == f.entries for f in report.values())
    exceptions = [e for f in report.values() for e in f.exceptions]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{passed} of {total}" in readme
    listed = set(re.findall(r"`((?:live_)?[a-z_]+_\d+(?:-\d+-\d+)?)`", readme))
    assert {e.id for e in exceptions} <= listed, sorted({e.id for e in exceptions} - listed)
    # the schemas and the parser lose nothing of BFCL's own data: every exception is BFCL disagreeing with itself
    assert all(e.data_conflict for e in exceptions), [e.line() for e in exceptions if not e.data_conflict]


def test_bfcl_in_the_runner_is_scored_by_bfcls_checker(tmp_path) -> None:
    """``omni-agent eval bfcl``: each entry an episode, its check BFCL's verdict on the first
    turn as written; a scripted model that writes "10" for an integer fails, as on BFCL."""
    from omni_agent.eval.results import read_results
    from omni_agent.eval.runner import run_suite

    tasks = bfcl_tasks(["simple_python", "irrelevance"], limit=2)
    assert len(tasks) == 4 and {t.checks[0].type for t in tasks} == {"bfcl"} and tasks[0].reference[0].calls
    summary = run_suite(tasks, model="reference", out=tmp_path / "ref", workers=2, progress=False)
    assert summary.passed == 4
    coerced = tmp_path / "coerced.json"
    coerced.write_text(json.dumps([GOOD.replace("10", '"10"'), "Done."]))
    summary = run_suite(tasks[:1], model=f"scripted:{coerced}", out=tmp_path / "coerced", progress=False)
    result = read_results(tmp_path / "coerced" / "results.jsonl")[0]
    assert not result.passed and result.checks[0].detail == "type_error:simple"


def test_score_model_end_to_end_over_http(openai_server) -> None:
    """A real backend (OpenAI protocol over HTTP): native calls, Qwen text calls, a coerced-kind
    answer BFCL rejects, and a broken reply, which counts as that entry failed at "model"."""
    from omni_agent.eval.bfcl import score_model
    from omni_agent.models.spec import load_model

    native = [{"id": "c1", "type": "function", "function": {"name": "calculate_triangle_area", "arguments": '{"base": 10, "height": 5}'}}]
    openai_server.reply_chat(None, tool_calls=native)  # simple_python_0: right
    openai_server.reply_chat('<tool_call>\n{"name": "math.factorial", "arguments": {"number": "5"}}\n</tool_call>')  # _1: "5" for 5
    openai_server.reply_raw("{not json")  # _2: a broken reply
    openai_server.reply_chat("None of these functions can do that.")  # irrelevance_0: right (no call)
    model = load_model(f"openai:{openai_server.base_url}#m?max_retries=0")
    scores = score_model(model, ["simple_python"], limit=3) | score_model(model, ["irrelevance"], limit=1)
    assert scores["simple_python"] == {"entries": 3, "correct": 1, "accuracy": 0.3333,
                                       "failed_at": {"model": 1, "type_error": 1}}  # fmt: skip
    assert scores["irrelevance"]["correct"] == 1
    sent = openai_server.chat_requests()[0].json
    assert [t["function"]["name"] for t in sent["tools"]] == ["calculate_triangle_area"]
    assert sent["tools"][0]["function"]["parameters"]["properties"]["base"]["type"] == "integer"


def test_multi_turn_ground_truth_passes_and_a_wrong_step_fails() -> None:
    """Multi-turn: our agent, turn by turn, on BFCL's simulated APIs; BFCL's multi_turn_checker."""
    import asyncio

    from omni_agent.eval.bfcl_multi_turn import MULTI_TURN_CATEGORIES, fidelity_entry, ground_truth_outputs, load_multi_turn, run_entry
    from omni_agent.models.scripted import ScriptedModel

    for category in MULTI_TURN_CATEGORIES:
        entry = load_multi_turn(category, limit=1)[0]
        verdict = fidelity_entry(entry)
        assert verdict.valid, (entry["id"], verdict.error_type, verdict.error)
        assert [sum(len(step) for step in turn) for turn in verdict.calls] == [len(t) for t in entry["ground_truth"]]
    entry = load_multi_turn("multi_turn_base", limit=1)[0]
    outputs = ground_truth_outputs(entry)
    outputs[0] = outputs[0].replace("document", "archive")  # cd into the wrong folder first
    wrong = asyncio.run(run_entry(entry, ScriptedModel(outputs, name="wrong")))
    assert not wrong.valid and wrong.error_type.startswith("multi_turn:")
