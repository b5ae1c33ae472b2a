"""Read the almost-JSON that language models write, and say what had to be repaired.

The stdlib ``json`` is tried first (the fast path: well-formed output costs one ``json.loads``).
Only when it fails does the text go through ``json_repair`` (a maintained library that fixes
single quotes, trailing commas, Python literals, missing closing brackets, unquoted keys and
more). ``json_repair`` does not report what it changed in a usable form, so a small scanner of
our own names the repairs (``single_quotes``, ``trailing_comma``...) for the parser's notes;
the scanner never changes the text. Two cases are handled here before ``json_repair`` because it
gets them wrong or silently: code fences around the value, and text after a complete value
(an extra closing brace, or several values in a row, which ``json_repair`` would merge or drop).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_LENIENT_CHARS", "ends_inside_string", "loads_lenient"]

MAX_LENIENT_CHARS = 200_000
"""Longer text is not repaired (a tool call is never that long; this bounds the repair cost)."""

_FENCE_RE = re.compile(r"^\s*```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)\n?[ \t]*(?:```\s*)?$", re.DOTALL)
_CLOSERS_RE = re.compile(r"^[\s}\]]+$")
_WORD_RE = re.compile(r"\w+")  # str.isalpha() characters are all \w
_decoder = json.JSONDecoder()


def loads_lenient(text: str) -> tuple[Any, list[str]]:
    """Parse ``text`` as JSON, repairing it if needed.

    Returns ``(value, repairs)``; ``repairs`` is empty when the text was valid JSON, else names
    what was fixed: ``control_characters``, ``code_fence``, ``extra_closing_brace``, ``several_values``,
    ``trailing_text``, ``single_quotes``, ``trailing_comma``, ``python_literals``,
    ``unquoted_keys``, ``truncated``, ``other``. Raises ``ValueError`` when no JSON value can be
    recovered (empty text, prose without any JSON, text over :data:`MAX_LENIENT_CHARS`).
    """
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    stripped = text.strip()
    try:
        return json.loads(stripped), []
    except (ValueError, RecursionError):
        pass
    if not stripped:
        raise ValueError("empty text")
    try:  # raw newlines or tabs inside strings: models write them in code and multi-line text
        return json.loads(stripped, strict=False), ["control_characters"]
    except (ValueError, RecursionError):
        pass
    if len(stripped) > MAX_LENIENT_CHARS:
        raise ValueError(f"text too long to repair ({len(stripped)} characters)")
    repairs: list[str] = []
    fenced = _FENCE_RE.match(stripped) if stripped.startswith("```") else None
    if fenced:
        stripped = fenced.group(1).strip()
        repairs.append("code_fence")
        try:
            return json.loads(stripped), repairs
        except (ValueError, RecursionError):
            pass
    prefix = _complete_prefix(stripped)
    if prefix is not None:
        value, repair = prefix
        return value, repairs + [repair]
    return _repair(stripped, repairs)


def _complete_prefix(text: str) -> tuple[Any, str] | None:
    """Handle a complete JSON value followed by more text, which the stdlib refuses."""
    try:
        value, end = _decoder.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    rest = text[end:]
    if _CLOSERS_RE.match(rest):
        return value, "extra_closing_brace"
    values = [value]
    pos = end
    while True:  # several values in a row ("{...}\n{...}"): parallel calls in one block
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            break
        try:
            value, pos = _decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            if isinstance(values[0], (dict, list)) and len(values) == 1 and not text[pos:].lstrip().startswith(("{", "[")):
                return values[0], "trailing_text"
            return None
        values.append(value)
    return values, "several_values"


def _repair(text: str, repairs: list[str]) -> tuple[Any, list[str]]:
    import json_repair  # imported on the slow path only

    try:
        value = json_repair.loads(text, skip_json_loads=True)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    except Exception as exc:  # json_repair is lenient by design; any failure of its own is "unrecoverable"
        raise ValueError(f"unrecoverable JSON ({type(exc).__name__})") from exc
    if value == "" or not isinstance(value, (dict, list)) and not _looks_like_scalar(text):
        # json_repair turns prose into "" or a bare string: that is not a recovered value.
        raise ValueError("no JSON value found")
    return value, repairs + (_describe_repairs(text) or ["other"])


def _looks_like_scalar(text: str) -> bool:
    return text[:1] in "\"'-0123456789" or text in ("true", "false", "null", "True", "False", "None")


def _describe_repairs(text: str) -> list[str]:
    """Name the defects of almost-JSON ``text`` (outside of strings); changes nothing.

    Written here because json_repair's own log is free text and misses most repairs.
    """
    found: dict[str, None] = {}
    depth = 0
    i, n = 0, len(text)
    last_significant = ""
    while i < n:
        ch = text[i]
        if ch in "\"'":
            if ch == "'":
                found["single_quotes"] = None
            i = _skip_string(text, i)
            if i > n:
                found["truncated"] = None
                break
            last_significant = '"'
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            if last_significant == ",":
                found["trailing_comma"] = None
            if depth == 0:
                found["extra_closing_brace"] = None
            else:
                depth -= 1
        elif ch.isalpha() or ch == "_":
            end = _WORD_RE.match(text, i).end()  # type: ignore[union-attr]  # ch starts a word
            token = text[i:end]
            i = end
            if token in ("True", "False", "None"):
                found["python_literals"] = None
            elif token not in ("true", "false", "null"):
                rest = text[i : i + 20].lstrip()
                found["unquoted_keys" if rest.startswith(":") else "other"] = None
            last_significant = "w"
            continue
        if not ch.isspace():
            last_significant = ch
        i += 1
    if depth > 0:
        found["truncated"] = None
    return list(found)


def ends_inside_string(text: str) -> bool:
    """True when ``text`` stops inside a string literal: the value was cut off (an output limit),
    so a repaired value would hold a partial string (half a path, half a command)."""
    i, n = 0, len(text)
    while i < n:
        if text[i] in "\"'":
            i = _skip_string(text, i)
            if i > n:
                return True
            continue
        i += 1
    return False


def _skip_string(text: str, start: int) -> int:
    """Index just past the string starting at ``start`` (``len(text) + 1`` if it never closes)."""
    quote = text[start]
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            return i + 1
        if ch == "\n" and quote == "'":  # an apostrophe in prose, not a string: stop at the line end
            return i
        i += 1
    return n + 1
