"""Success checks: judge an episode from the workspace, the answer, the calls and the browser.

Every check returns a :class:`CheckResult`; a check that raises (a bad regex, a page that is
gone, a command that hangs) is a failed check with the error recorded, never a crashed episode.
The episode passes when every check passes.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from pydantic import BaseModel

from ..messages import ToolCall
from .matching import match_calls
from .setup import run_shell
from .task import (
    AnswerCheck,
    BfclCheck,
    BrowserDomCheck,
    BrowserUrlCheck,
    Check,
    CommandCheck,
    FileCheck,
    Tau2RewardCheck,
    ToolCallsCheck,
    substitute,
)

__all__ = ["CheckContext", "CheckResult", "describe_check", "run_checks"]


class CheckResult(BaseModel):
    name: str
    type: str
    passed: bool
    detail: str = ""
    error: str | None = None
    """Set when the check itself raised: the check counts as failed."""
    value: Any = None


@dataclass
class CheckContext:
    """What checks may look at once the agent has stopped."""

    workspace: Path
    env: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    calls_by_step: list[list[ToolCall]] = field(default_factory=list)
    page: Callable[[], Awaitable[Any]] | None = None
    """Returns the episode browser's current Playwright page (async), or None."""
    metrics: dict[str, float] = field(default_factory=dict)
    first_output: str | None = None
    """The model's first turn as written: its raw text, or (a server's own tool calls) those calls
    rendered as ``<tool_call>`` blocks."""


def describe_check(check: Check) -> str:
    if check.name:
        return check.name
    if isinstance(check, CommandCheck):
        return f"command `{check.run}`"
    if isinstance(check, FileCheck):
        return f"file {check.path}"
    if isinstance(check, AnswerCheck):
        parts = [f"{k}={getattr(check, k)!r}" for k in ("equals", "contains", "regex", "number") if getattr(check, k) is not None]
        return "answer " + ", ".join(parts)
    if isinstance(check, BrowserUrlCheck):
        return f"browser url {check.equals or check.regex}"
    if isinstance(check, BrowserDomCheck):
        return f"browser dom {check.js or check.selector}"
    if isinstance(check, BfclCheck):
        return f"BFCL's own checker ({check.entry})"
    if isinstance(check, Tau2RewardCheck):
        return "tau2 reward (tau2's own evaluator)"
    if isinstance(check, ToolCallsCheck):
        return "tool calls " + (", ".join(c.name for c in check.expected) or "(none)")
    return check.type


async def run_checks(checks: list[Check], ctx: CheckContext) -> list[CheckResult]:
    results = []
    for raw in checks:
        check = raw.model_copy(update={k: substitute(v, ctx.values) for k, v in raw.__dict__.items() if isinstance(v, str) and k != "type"})
        name = describe_check(check)
        try:
            passed, detail, value = await _run_one(check, ctx)
            results.append(CheckResult(name=name, type=check.type, passed=passed, detail=detail, value=_jsonable(value)))
        except Exception as exc:  # a broken check fails, with the reason, and the others still run
            results.append(CheckResult(name=name, type=check.type, passed=False, error=f"{type(exc).__name__}: {exc}"))
    return results


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, dict)):
        return value
    return repr(value)


async def _run_one(check: Check, ctx: CheckContext) -> tuple[bool, str, Any]:
    if isinstance(check, CommandCheck):
        return await asyncio.to_thread(_command, check, ctx)
    if isinstance(check, FileCheck):
        return _file(check, ctx)
    if isinstance(check, AnswerCheck):
        return _answer(check, ctx.answer)
    if isinstance(check, ToolCallsCheck):
        return _tool_calls(check, ctx)
    if isinstance(check, BfclCheck):
        from .bfcl import entry_by_id, judge_text

        if ctx.first_output is None:
            raise RuntimeError("the model made no turn")
        verdict = judge_text(entry_by_id(check.category, check.entry), ctx.first_output)
        return verdict.ok, verdict.error_type or "BFCL's checker: valid", verdict.reason or None
    if isinstance(check, Tau2RewardCheck):
        if "tau2_reward" not in ctx.metrics:
            raise RuntimeError("no tau2 reward: this check belongs to tau2 episodes (omni-agent eval tau2)")
        reward = ctx.metrics["tau2_reward"]
        return reward == 1.0, f"reward {reward:g} from tau2's evaluator", reward
    if isinstance(check, (BrowserUrlCheck, BrowserDomCheck)):
        if ctx.page is None:
            raise RuntimeError("this check needs the browser, but the episode has no browser session")
        page = await ctx.page()
        if page is None:
            raise RuntimeError("the browser has no open page")
        if isinstance(check, BrowserUrlCheck):
            return _url(check, page.url)
        return await _dom(check, page, ctx)
    raise TypeError(f"unknown check type {check.type!r}")


def _text_matches(text: str, *, equals: str | None, contains: str | None, regex: str | None, case: bool = True) -> tuple[bool, str]:
    norm = (lambda s: s) if case else (lambda s: s.lower())
    if equals is not None and norm(text.strip()) != norm(equals.strip()):
        return False, f"expected {equals!r}, got {text.strip()[:200]!r}"
    if contains is not None and norm(contains) not in norm(text):
        return False, f"{contains!r} not in {text[:200]!r}"
    if regex is not None and not re.search(regex, text, 0 if case else re.IGNORECASE):
        return False, f"/{regex}/ does not match {text[:200]!r}"
    return True, "ok"


def _command(check: CommandCheck, ctx: CheckContext) -> tuple[bool, str, Any]:
    proc = run_shell(check.run, cwd=ctx.workspace, env=ctx.env or dict(os.environ), timeout=check.timeout)
    out = proc.stdout or ""
    if check.exit_code is not None and proc.returncode != check.exit_code:
        tail = (proc.stderr or out).strip()[-300:]
        return False, f"exit status {proc.returncode}, expected {check.exit_code}" + (f": {tail}" if tail else ""), proc.returncode
    ok, detail = _text_matches(out, equals=check.output_equals, contains=check.output_contains, regex=check.output_regex)
    return ok, detail, out.strip()[:500]


def _file(check: FileCheck, ctx: CheckContext) -> tuple[bool, str, Any]:
    path = (ctx.workspace / check.path).resolve()
    if not path.is_relative_to(ctx.workspace.resolve()):
        raise ValueError(f"{check.path} is outside the workspace")
    if not path.exists():
        return (not check.exists), ("absent, as expected" if not check.exists else f"{check.path} does not exist"), None
    if not check.exists:
        return False, f"{check.path} exists but should not", None
    if check.equals is None and check.contains is None and check.regex is None:
        return True, "exists", None
    text = path.read_text(encoding="utf-8", errors="replace")
    if check.equals is not None and text.rstrip() != check.equals.rstrip():
        return False, f"content is {text[:200]!r}, expected {check.equals[:200]!r}", text[:500]
    ok, detail = _text_matches(text, equals=None, contains=check.contains, regex=check.regex)
    return ok, detail, text[:500]


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def _answer(check: AnswerCheck, answer: str | None) -> tuple[bool, str, Any]:
    if answer is None:
        return False, "the agent gave no final answer", None
    case = check.case_sensitive
    ok, detail = _text_matches(answer, equals=check.equals, contains=check.contains, regex=check.regex, case=case)
    if not ok:
        return False, detail, answer
    if check.number is not None:
        found = [float(m.replace(",", "")) for m in _NUMBER.findall(answer)]
        if not found:
            return False, f"no number in the answer {answer[:200]!r}", answer
        # The last number is the answer ("I counted the files: 3 files, so the answer is 3").
        got = found[-1]
        if not math.isclose(got, check.number, abs_tol=check.tolerance, rel_tol=0.0) and got != check.number:
            return False, f"{got:g} is not {check.number:g} ± {check.tolerance:g}", got
        return True, f"{got:g} within {check.tolerance:g} of {check.number:g}", got
    return True, detail, answer


def _tool_calls(check: ToolCallsCheck, ctx: CheckContext) -> tuple[bool, str, Any]:
    if check.step is None:
        calls = [c for step in ctx.calls_by_step for c in step]
    else:
        calls = ctx.calls_by_step[check.step - 1] if len(ctx.calls_by_step) >= check.step else []
    result = match_calls(calls, check.expected, ordered=check.ordered)
    shown = [{"name": c.name, "arguments": c.arguments} for c in calls]
    return result.ok, result.reason or "calls match", shown


def _url(check: BrowserUrlCheck, url: str) -> tuple[bool, str, Any]:
    if check.equals is not None and url.rstrip("/") != check.equals.rstrip("/"):
        return False, f"url is {url}, expected {check.equals}", url
    if check.regex is not None and not re.search(check.regex, url):
        return False, f"url {url} does not match /{check.regex}/", url
    return True, url, url


async def _dom(check: BrowserDomCheck, page: Any, ctx: CheckContext) -> tuple[bool, str, Any]:
    if check.js is not None:
        value = await page.evaluate(check.js)
        if check.metric:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                ctx.metrics[check.metric] = float(value)
        if check.min is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return False, f"{check.js} = {value!r} is not a number", value
            return value >= check.min, f"{check.js} = {value!r} (min {check.min:g})", value
        if check.equals is not None:
            return value == check.equals, f"{check.js} = {value!r}, expected {check.equals!r}", value
        if check.contains is not None:
            return check.contains in str(value), f"{check.js} = {str(value)[:200]!r}", value
        return bool(value), f"{check.js} = {value!r}", value
    assert check.selector is not None
    locator = page.locator(check.selector)
    count = await locator.count()
    if count == 0:
        return False, f"no element matches {check.selector!r}", None
    text = (await locator.first.inner_text()).strip()
    if check.equals is not None and text != str(check.equals).strip():
        return False, f"{check.selector} text is {text[:200]!r}, expected {check.equals!r}", text
    if check.contains is not None and check.contains not in text:
        return False, f"{check.contains!r} not in {check.selector} text {text[:200]!r}", text
    return True, f"{check.selector}: {text[:100]!r}", text
