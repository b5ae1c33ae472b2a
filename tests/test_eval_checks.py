"""Success checks and BFCL-style call matching."""

from __future__ import annotations

import asyncio
from pathlib import Path

from omni_agent.eval.checks import CheckContext, run_checks
from omni_agent.eval.matching import match_calls
from omni_agent.eval.task import Task
from omni_agent.messages import ToolCall


def _checks(*checks: dict) -> list:
    return Task.model_validate({"id": "t", "instruction": "x", "checks": list(checks)}).checks


def test_bfcl_matching_semantics() -> None:
    expected = [{"name": "area", "arguments": {"base": [10], "unit": ["units", ""]}}]
    assert match_calls([ToolCall(name="area", arguments={"base": 10})], expected).ok  # "" = may be omitted
    assert match_calls([ToolCall(name="area", arguments={"base": 10.0, "unit": "Units"})], expected).ok
    assert not match_calls([ToolCall(name="area", arguments={"base": 11})], expected).ok
    assert not match_calls([ToolCall(name="area", arguments={"base": 10, "extra": 1})], expected).ok
    assert not match_calls([ToolCall(name="area", arguments={"base": True})], expected).ok  # bool is no number
    assert not match_calls([ToolCall(name="area", arguments={})], expected).ok  # required value missing
    # parallel calls are order-free, and the matching is a full one, not greedy
    par = [{"name": "f", "arguments": {"x": [1, 2]}}, {"name": "f", "arguments": {"x": [1]}}]
    got = [ToolCall(name="f", arguments={"x": 2}), ToolCall(name="f", arguments={"x": 1})]
    assert match_calls(got, par).ok
    assert not match_calls(got[:1], par).ok
    flipped = list(reversed(got))  # a greedy matcher would give x=1 to the first expected call and fail
    assert match_calls(flipped, par).ok
    assert match_calls(got, par, ordered=True).ok and not match_calls(flipped, par, ordered=True).ok
    # nested dict answers; string normalisation (case, spaces, punctuation)
    nested = [{"name": "g", "arguments": {"p": [{"size": ["large"], "milk": ["oat", ""]}]}}]
    assert match_calls([ToolCall(name="g", arguments={"p": {"size": "Large"}})], nested).ok
    assert not match_calls([ToolCall(name="g", arguments={"p": {"size": "small"}})], nested).ok
    # irrelevance: no call expected
    assert match_calls([], []).ok and not match_calls([ToolCall(name="f")], []).ok


def test_checks_pass_fail_and_a_raising_check_is_a_recorded_failure(tmp_path: Path) -> None:
    (tmp_path / "out.txt").write_text("total: 250\n")
    checks = _checks(
        {"type": "file", "path": "out.txt", "regex": r"total: \d+"},
        {"type": "file", "path": "missing.txt", "exists": False},
        {"type": "answer", "number": 250, "tolerance": 0.5},
        {"type": "answer", "regex": "([unclosed"},  # raises re.error
        {"type": "command", "run": "test -f out.txt && echo yes", "output_equals": "yes"},
        {"type": "command", "run": "exit 3"},
        {"type": "tool_calls", "expected": [{"name": "f", "arguments": {"x": [1]}}]},
        {"type": "browser_url", "regex": "x"},  # no browser in this episode
    )
    ctx = CheckContext(workspace=tmp_path, answer="The total is 250.2", calls_by_step=[[ToolCall(name="f", arguments={"x": 1})]])
    results = asyncio.run(run_checks(checks, ctx))
    assert [r.passed for r in results] == [True, True, True, False, True, False, True, False]
    assert results[3].error and "error" in results[3].error.lower()
    assert "exit status 3" in results[5].detail
    assert "no browser" in (results[7].error or "")
    assert results[2].value == 250.2


def test_answer_checks() -> None:
    checks = _checks({"type": "answer", "equals": "Paris"}, {"type": "answer", "number": 3})
    ok = asyncio.run(run_checks(checks, CheckContext(workspace=Path("."), answer=" paris ")))
    assert [r.passed for r in ok] == [True, False]
    none = asyncio.run(run_checks(checks, CheckContext(workspace=Path("."), answer=None)))
    assert not any(r.passed for r in none) and "no final answer" in none[0].detail
