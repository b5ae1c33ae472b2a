"""Compare the calls a model made with expected calls, with BFCL's AST-checker semantics.

Each expected argument lists its acceptable values; ``""`` among them means the argument may be
omitted; an argument the model passed that is not listed fails the match. Strings compare
after BFCL's normalisation (case, spaces and ``,./-_*^`` ignored); numbers compare by value (an
int is accepted where a float is expected; the schema validator has already rejected a
fractional value for an integer) but a bool is never a number; nested dicts and lists
compare element by element with the same rules. Parallel calls match in any order (a full
bipartite matching, not a greedy one). No expected calls means the model must not call at all
(BFCL's irrelevance); ``any_call`` inverts that (BFCL's relevance).

Written here rather than imported from ``bfcl-eval`` because its checker pulls in its model
registry (dozens of SDKs) and works on its own string-typed schemas, while this one runs on the
project's parsed :class:`ToolCall` objects for any task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["CallMatch", "match_calls", "normalize_string", "value_matches"]

_STRIP = re.compile(r"[ ,./\-_*^]")


@dataclass(frozen=True)
class CallMatch:
    ok: bool
    reason: str = ""


def normalize_string(value: str) -> str:
    """BFCL's ``standardize_string``: drop spaces and ``,./-_*^``, lower-case, ' -> "."""
    return _STRIP.sub("", value).lower().replace("'", '"')


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def value_matches(actual: Any, acceptable: Any) -> bool:
    """Does ``actual`` equal one acceptable value (recursively, with BFCL's rules)?"""
    if isinstance(acceptable, dict):
        if not isinstance(actual, dict):
            return False
        return _dict_matches(actual, acceptable) is None
    if isinstance(acceptable, (list, tuple)):
        if not isinstance(actual, (list, tuple)) or len(actual) != len(acceptable):
            return False
        return all(value_matches(a, b) for a, b in zip(actual, acceptable))
    if isinstance(acceptable, str):
        return isinstance(actual, str) and normalize_string(actual) == normalize_string(acceptable)
    if isinstance(acceptable, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(acceptable, bool) and actual == acceptable
    if _is_number(acceptable):
        if not _is_number(actual):
            return False
        return float(actual) == float(acceptable)
    return bool(actual == acceptable)


def _dict_matches(actual: Mapping[str, Any], expected: Mapping[str, Sequence[Any]]) -> str | None:
    """None when every argument fits; else the reason it does not."""
    for key in actual:
        if key not in expected:
            return f"unexpected argument {key!r}"
    for key, options in expected.items():
        options = list(options) if isinstance(options, (list, tuple)) else [options]
        if key not in actual:
            if "" in options:
                continue
            return f"missing argument {key!r}"
        value = actual[key]
        if not any(value_matches(value, opt) for opt in options if not (opt == "" and value != "")):
            shown = [o for o in options if o != ""][:3]
            return f"argument {key!r}={value!r} is not one of {shown!r}"
    return None


def _one(actual: tuple[str, Mapping[str, Any]], expected: tuple[str, Mapping[str, Sequence[Any]]]) -> str | None:
    name, args = actual
    exp_name, exp_args = expected
    if name != exp_name:
        return f"called {name!r}, expected {exp_name!r}"
    reason = _dict_matches(args, exp_args)
    return f"{name}: {reason}" if reason else None


def _as_pairs(calls: Iterable[Any]) -> list[tuple[str, Mapping[str, Any]]]:
    pairs = []
    for c in calls:
        if isinstance(c, tuple):
            pairs.append((c[0], c[1]))
        elif isinstance(c, Mapping):
            pairs.append((c["name"], c.get("arguments", {})))
        else:  # ToolCall / ExpectedCall
            pairs.append((c.name, c.arguments))
    return pairs


def match_calls(actual: Iterable[Any], expected: Iterable[Any], *, ordered: bool = False, any_call: bool = False) -> CallMatch:
    """Match the model's calls (ToolCall, dicts or (name, args)) against expected calls
    (ExpectedCall, dicts or (name, {arg: [acceptable...]}))."""
    got, want = _as_pairs(actual), _as_pairs(expected)
    if any_call:
        return CallMatch(bool(got), "" if got else "expected a call, got none")
    if not want:
        return CallMatch(not got, "" if not got else f"expected no call, got {[n for n, _ in got]}")
    if len(got) != len(want):
        return CallMatch(False, f"expected {len(want)} call(s), got {len(got)}: {[n for n, _ in got]}")
    if ordered:
        for a, e in zip(got, want):
            reason = _one(a, e)
            if reason:
                return CallMatch(False, reason)
        return CallMatch(True)
    # Order-free: bipartite matching by augmenting paths (n is small: a handful of calls).
    fits = [[_one(a, e) is None for a in got] for e in want]
    owner: dict[int, int] = {}

    def assign(e: int, seen: set[int]) -> bool:
        for a in range(len(got)):
            if fits[e][a] and a not in seen:
                seen.add(a)
                if a not in owner or assign(owner[a], seen):
                    owner[a] = e
                    return True
        return False

    for e in range(len(want)):
        if not assign(e, set()):
            reasons = [r for r in (_one(a, want[e]) for a in got) if r]
            return CallMatch(False, f"no call matches expected {want[e][0]!r}" + (f" ({reasons[0]})" if reasons else ""))
    return CallMatch(True)
