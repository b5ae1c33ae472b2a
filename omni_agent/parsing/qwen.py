"""Qwen Thinker text -> visible text, thinking, tool calls and problems.

The format (Qwen3 / Qwen3-VL / Qwen3-Omni templates)::

    <think>reasoning</think>            (or only "</think>": the template opened the block)
    Some visible text.
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
    <tool_call>...</tool_call>          (several blocks = parallel calls)

One scanner (:class:`QwenScanner`) serves both :func:`parse_output` (whole text) and
:class:`~omni_agent.parsing.stream.StreamParser` (chunks), so the two cannot disagree. It holds
back only what it cannot decide yet: a possible tag split across chunks (``<tool_``), trailing
whitespace, and a code fence that may turn out to wrap a tool call.

Tolerated, each with a non-fatal note: arguments as a JSON string, code fences inside or around
a block, almost-JSON (see :mod:`.lenient_json`), a missing ``</tool_call>`` at the end (or
before the next ``<tool_call>``), leaked template tokens (``<|im_end|>``...), stray tags, and the
``{"function": ..., "parameters": ...}`` variants. A block that cannot be read is a fatal problem
with a snippet; the rest of the output still parses. ``<tool_call>`` inside thinking is never
executed (``call_in_thinking`` note).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Union

from ..messages import ToolCall, new_call_id
from .lenient_json import ends_inside_string, loads_lenient
from .types import ParsedOutput, ParseProblem

__all__ = [
    "QwenScanner",
    "ScanItem",
    "call_from_payload",
    "internal_error",
    "parse_call_block",
    "parse_output",
    "thinking_opened_by_template",
]

Channel = Literal["visible", "thinking"]
ScanItem = Union[tuple[Literal["text"], Channel, str], tuple[Literal["call"], ToolCall], tuple[Literal["problem"], ParseProblem]]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_TOKEN_BODY = r"[A-Za-z0-9_]{1,40}"
_IM_START = "<|im_start|>"
_TAG_RE = re.compile(
    r"<think>|</think>|<tool_call>|</tool_call>"
    r"|<\|im_start\|>(?:assistant|user|system|tool)?[ \t]{0,2}\n?"
    rf"|<\|{_TOKEN_BODY}\|>"
)
_FIXED_TAGS = (THINK_OPEN, THINK_CLOSE, CALL_OPEN, CALL_CLOSE)
_PARTIAL_TOKEN_RE = re.compile(rf"<(?:\|(?:{_TOKEN_BODY}\|?)?)?\Z")
_MAX_TAG = 45
_MIN_TRUNCATED_TAG = 2
"""At the end of the output, a tag prefix this long ("<t", "<|") is a cut-off tag, not text."""
_IM_START_LOOKAHEAD = len("assistant") + 3
"""The longest text the ``<|im_start|>`` pattern can still take in after a match (role, two
spaces, newline): a stream waits for that much before deciding, so chunking cannot change it."""
_SNIPPET_CHARS = 200
_CLOSE_FENCE = "```"


def parse_output(text: str, *, starts_in_thinking: bool | None = None) -> ParsedOutput:
    """Split raw Thinker text into visible text, thinking, calls and problems. Never raises.

    ``starts_in_thinking``: True when the chat template opened ``<think>`` in the prompt (Qwen
    "Thinking" models), so the output begins inside the think block. None (default) decides from
    the text: a ``</think>`` before any ``<think>`` means everything before it was thinking.
    """
    if not isinstance(text, str):
        return ParsedOutput(
            problems=[ParseProblem(kind="invalid_json", message=f"model output is not text ({type(text).__name__})")]
        )
    if starts_in_thinking is None:
        starts_in_thinking = thinking_opened_by_template(text)
    scanner = QwenScanner(starts_in_thinking=starts_in_thinking)
    try:
        items = scanner.feed(text) + scanner.close()
    except Exception as exc:  # a scanner bug must not take the agent down: report it as data
        return ParsedOutput(problems=[internal_error(exc)])
    visible: list[str] = []
    thinking: list[str] = []
    out = ParsedOutput()
    for item in items:
        if item[0] == "text":
            (visible if item[1] == "visible" else thinking).append(item[2])
        elif item[0] == "call":
            out.calls.append(item[1])
        else:
            out.problems.append(item[1])
    out.visible_text = "".join(visible)
    out.thinking = "".join(thinking) if scanner.thinking_seen else None
    return out


def internal_error(exc: Exception) -> ParseProblem:
    return ParseProblem(
        kind="invalid_json", message=f"internal parser error ({type(exc).__name__}: {exc}); please report it"
    )


def thinking_opened_by_template(text: str) -> bool:
    """True when the first think tag of ``text`` is a closing one (the prompt opened the block)."""
    close = text.find(THINK_CLOSE)
    if close < 0:
        return False
    opening = text.find(THINK_OPEN, 0, close)
    return opening < 0


class QwenScanner:
    """Incremental scanner of Qwen output; ``feed``/``close`` return :data:`ScanItem` tuples."""

    def __init__(self, *, starts_in_thinking: bool = False) -> None:
        self.mode: Literal["visible", "thinking", "call"] = "thinking" if starts_in_thinking else "visible"
        self.thinking_seen = starts_in_thinking
        self._buf = ""
        self._call_parts: list[str] = []
        self._out: list[ScanItem] = []
        self._visible = _TextSink("visible", self._out, fences=True)
        self._thinking = _TextSink("thinking", self._out, fences=False)
        self._closed = False

    def feed(self, chunk: str) -> list[ScanItem]:
        if self._closed or not chunk:
            return []
        self._buf += chunk
        self._scan(final=False)
        return self._take()

    def close(self) -> list[ScanItem]:
        """Flush everything held back; an unclosed final block is parsed."""
        if self._closed:
            return []
        self._scan(final=True)
        self._closed = True
        if self.mode == "call":
            self._finish_block(closed=False)
        self._visible.flush()
        self._thinking.flush()
        return self._take()

    # -- scanning ----------------------------------------------------------------------------
    def _take(self) -> list[ScanItem]:
        out = list(self._out)
        self._out.clear()
        return out

    def _scan(self, *, final: bool) -> None:
        buf = self._buf
        pos = 0
        while True:
            m = _TAG_RE.search(buf, pos)
            if m is None:
                safe = _undecided_tail_start(buf, pos)
                self._text(buf[pos:safe])
                tail = buf[safe:]
                self._buf = tail
                if final and tail:
                    self._buf = ""
                    if len(tail) >= _MIN_TRUNCATED_TAG:  # the output ended inside a tag
                        self._problem("stray_tag", f"removed a truncated tag {tail!r} at the end", tail, fatal=False)
                    else:
                        self._text(tail)
                return
            tag = m.group(0)
            if not final and tag.startswith(_IM_START) and not tag.endswith("\n") and m.end() + _IM_START_LOOKAHEAD > len(buf):
                self._text(buf[pos : m.start()])  # the role after <|im_start|> may still be arriving
                self._buf = buf[m.start() :]
                return
            self._text(buf[pos : m.start()])
            if self.mode == "call" and tag in (CALL_OPEN, CALL_CLOSE) and self._inside_json_string():
                self._call_parts.append(tag)  # text of an argument value, not a tag
            else:
                self._tag(tag)
            pos = m.end()

    def _inside_json_string(self) -> bool:
        """True when the open call block stops inside a string literal: a ``<tool_call>`` or
        ``</tool_call>`` there is part of an argument's value (code, HTML, docs about the
        format), and cutting the call at it would lose the rest."""
        return ends_inside_string("".join(self._call_parts))

    def _text(self, text: str) -> None:
        if not text:
            return
        if self.mode == "visible":
            self._visible.write(text)
        elif self.mode == "thinking":
            self._thinking.write(text)
        else:
            self._call_parts.append(text)

    def _tag(self, tag: str) -> None:
        mode = self.mode
        if tag not in _FIXED_TAGS:  # a leaked template token: dropped wherever it is
            self._problem("leaked_token", f"removed leaked template token {tag.strip()!r}", tag.strip(), fatal=False)
            return
        if mode == "call":
            if tag == CALL_CLOSE:
                self._finish_block(closed=True)
            elif tag == CALL_OPEN:
                self._finish_block(closed=False)
                self._visible.call_opened()
                self.mode = "call"
            else:
                self._call_parts.append(tag)
        elif mode == "thinking":
            if tag == THINK_CLOSE:
                self.mode = "visible"
            elif tag == THINK_OPEN:
                pass  # already thinking: a repeated opening tag carries nothing
            else:
                if tag == CALL_OPEN:
                    self._problem(
                        "call_in_thinking",
                        "a <tool_call> inside the thinking was ignored: only calls after </think> run",
                        fatal=False,
                    )
                self._thinking.write(tag)
        else:  # visible
            if tag == THINK_OPEN:
                self.mode = "thinking"
                self.thinking_seen = True
            elif tag == CALL_OPEN:
                self._visible.call_opened()
                self.mode = "call"
            else:
                self._problem("stray_tag", f"removed {tag} without an opening tag", tag, fatal=False)

    def _finish_block(self, *, closed: bool) -> None:
        content = "".join(self._call_parts)
        self._call_parts = []
        self.mode = "visible"
        self._visible.call_closed()
        calls, problems = parse_call_block(content)
        if not closed:
            problems.insert(
                0,
                ParseProblem(
                    kind="unclosed_block",
                    message="a <tool_call> block was not closed with </tool_call>",
                    snippet=_snippet(content),
                    fatal=False,
                ),
            )
        self._out.extend(("problem", p) for p in problems)
        self._out.extend(("call", c) for c in calls)

    def _problem(self, kind: Any, message: str, snippet: str = "", *, fatal: bool) -> None:
        self._out.append(("problem", ParseProblem(kind=kind, message=message, snippet=snippet, fatal=fatal)))


def _undecided_tail_start(buf: str, pos: int) -> int:
    """Start of a suffix of ``buf`` that may be the beginning of a tag (held back until more text)."""
    lt = buf.rfind("<", max(pos, len(buf) - _MAX_TAG))
    if lt < 0:
        return len(buf)
    tail = buf[lt:]
    if any(tag.startswith(tail) for tag in _FIXED_TAGS) or _PARTIAL_TOKEN_RE.match(tail):
        return lt
    return len(buf)


class _TextSink:
    """Emits one channel's text without leading/trailing whitespace and, for the visible
    channel, without the code fences that only wrap tool calls; the whitespace on both sides of
    a removed block collapses to the whitespace before it. Holds back what is undecided."""

    def __init__(self, channel: Channel, out: list[ScanItem], *, fences: bool) -> None:
        self.channel = channel
        self.out = out
        self.fences = fences
        self.pending = ""
        """Held tail: trailing whitespace, or a possible fence opener with the space before it."""
        self.started = False
        self.code_fences = 0
        self.line_start = True
        """Fence lines (```...) in the text emitted so far: odd means a code block is open."""
        self.fence_open = False
        self.after_block = False
        self.gap = ""
        """Held text from just before the last removed block (its trailing whitespace)."""
        self.post = ""
        """Text after the last removed block while undecided (whitespace, part of a fence)."""

    def write(self, text: str) -> None:
        if self.after_block:
            self.post += text
            resumed = self._resume()
            if resumed is None:
                return
            text = resumed
        s = self.pending + text
        if not self.started:
            s = s.lstrip()
        hold = _held_tail_start(s, fences=self.fences)
        self._emit(s[:hold])
        self.pending = s[hold:]

    def _resume(self) -> str | None:
        """Decide the text after a removed block, or None while it is still undecided."""
        rest = self.post.lstrip()
        if not rest:
            return None
        if self.fence_open:
            if len(rest) < len(_CLOSE_FENCE) and _CLOSE_FENCE.startswith(rest):
                return None  # "`" or "``": may become the closing fence
            self.fence_open = False
            if rest.startswith(_CLOSE_FENCE):
                self._note_fence("closing")
                self.post = rest[len(_CLOSE_FENCE) :]
                return self._resume()
        space_after = self.post[: len(self.post) - len(rest)]
        gap = self.gap
        self.after_block, self.gap, self.post = False, "", ""
        if not gap:
            return space_after + rest
        if gap.isspace():
            return gap + rest
        return gap + space_after + rest

    def call_opened(self) -> None:
        if self.after_block:  # only whitespace since the previous block
            self.gap = self.gap or self.post
            self.post = ""
            self.after_block = False
            self.pending = self.gap
        if not self.fences:
            return
        body = self.pending.strip()
        if body == _CLOSE_FENCE and self.code_fences % 2 == 1:
            return  # it closes the code block the visible text opened: it stays text
        if _is_fence_opener(body):
            self._note_fence("opening")
            self.pending = self.pending[: len(self.pending) - len(self.pending.lstrip())]
            self.fence_open = True

    def call_closed(self) -> None:
        if not self.after_block:
            self.gap = self.pending
        self.after_block = True
        self.pending = ""
        self.post = ""

    def flush(self) -> None:
        s = (self.gap + self.post) if self.after_block else self.pending
        s = s.rstrip()
        if not self.started:
            s = s.lstrip()
        self.pending = self.gap = self.post = ""
        self.after_block = self.fence_open = False
        self._emit(s)

    def _emit(self, text: str) -> None:
        if text:
            self.started = True
            self.code_fences += len(_FENCE_RUN_RE.findall(("\n" if self.line_start else "") + text))
            self.line_start = text.endswith("\n")
            self.out.append(("text", self.channel, text))

    def _note_fence(self, which: str) -> None:
        self.out.append(
            (
                "problem",
                ParseProblem(
                    kind="repaired_json",
                    message=f"removed the {which} code fence (code_fence) around a tool call",
                    snippet=_CLOSE_FENCE,
                    fatal=False,
                ),
            )
        )


_FENCE_OPENER_RE = re.compile(r"`{3}[A-Za-z0-9_+\-]*")
_FENCE_RUN_RE = re.compile(r"\n[ \t]*`{3,}")


def _is_fence_opener(text: str) -> bool:
    return _FENCE_OPENER_RE.fullmatch(text) is not None


def _held_tail_start(s: str, *, fences: bool) -> int:
    """Index where the undecided tail of ``s`` starts: trailing whitespace, and (visible
    channel) a possible fence opener such as ```json with the whitespace before it, which is
    dropped if a tool call follows."""
    end = len(s.rstrip())
    if not fences:
        return end
    tick = s.rfind("`", max(0, end - _MAX_FENCE_LANG - 1), end)
    if tick < 0 or _FENCE_LANG_RE.fullmatch(s, tick + 1, end) is None:
        return end
    start = tick
    while start > 0 and s[start - 1] == "`" and tick - start < 2:
        start -= 1
    if start > 0 and s[start - 1] == "`":  # four or more backticks: not a fence we drop
        return end
    return len(s[:start].rstrip())


_MAX_FENCE_LANG = 20
_FENCE_LANG_RE = re.compile(r"[A-Za-z0-9_+\-]*")


# -- one block -> calls -----------------------------------------------------------------------
def parse_call_block(content: str) -> tuple[list[ToolCall], list[ParseProblem]]:
    """Read the JSON between ``<tool_call>`` and ``</tool_call>``: one call, or several values."""
    text = content.strip()
    if not text:
        return [], [ParseProblem(kind="invalid_json", message="empty <tool_call> block", fatal=True)]
    try:
        value, repairs = loads_lenient(text)
    except ValueError as exc:
        return [], [
            ParseProblem(
                kind="invalid_json",
                message=f"could not read the tool call JSON ({exc}); write one JSON object "
                '{"name": ..., "arguments": {...}} per <tool_call> block',
                snippet=_snippet(text),
                fatal=True,
            )
        ]
    if "truncated" in repairs and ends_inside_string(text):
        return [], [_cut_off("the tool call", text)]
    problems: list[ParseProblem] = []
    if repairs:
        problems.append(
            ParseProblem(
                kind="repaired_json",
                message=f"repaired the tool call JSON ({', '.join(repairs)})",
                snippet=_snippet(text),
                fatal=False,
            )
        )
    payloads = value if isinstance(value, list) else [value]
    if not payloads:
        problems.append(ParseProblem(kind="invalid_json", message="the tool call block holds an empty list", snippet=_snippet(text)))
    calls: list[ToolCall] = []
    for payload in payloads:
        call, more = call_from_payload(payload)
        problems.extend(more)
        if call is not None:
            calls.append(call)
    return calls, problems


def call_from_payload(
    payload: Any, *, call_id: str | None = None, arguments_are_text: bool = False
) -> tuple[ToolCall | None, list[ParseProblem]]:
    """Turn one decoded call object into a ToolCall (None plus a fatal problem if impossible).

    Accepts ``{"name", "arguments"}``, ``{"name", "parameters"}``, ``{"function": NAME,
    "arguments"|"parameters"}`` and the OpenAI ``{"function": {"name", "arguments"}}``; the
    arguments may be an object or a JSON string of one.
    """
    if not isinstance(payload, dict):
        return None, [
            ParseProblem(
                kind="invalid_json",
                message=f'expected a JSON object {{"name": ..., "arguments": {{...}}}}, got {_json_type(payload)}',
                snippet=_snippet(_short_repr(payload)),
            )
        ]
    problems: list[ParseProblem] = []
    obj: dict[str, Any] = payload
    function = obj.get("function")
    if isinstance(function, dict):
        obj = {**{k: v for k, v in obj.items() if k != "function"}, **function}
    name = obj.get("name")
    if name is None and isinstance(function, str):
        name = function
    if not isinstance(name, str) or not name.strip():
        return None, [
            ParseProblem(
                kind="missing_name",
                message='a tool call needs a "name" (a non-empty string)',
                snippet=_snippet(_short_repr(payload)),
            )
        ]
    key = next((k for k in ("arguments", "parameters", "args") if k in obj), None)
    variant = (['"function"'] if isinstance(function, str) else []) + ([f'"{key}"'] if key not in (None, "arguments") else [])
    if variant:
        problems.append(
            ParseProblem(
                kind="repaired_json",
                message=f"read {' and '.join(variant)} as the standard \"name\"/\"arguments\" (variant_keys)",
                snippet=_snippet(_short_repr(payload)),
                fatal=False,
            )
        )
    raw_args = obj.get(key) if key else None
    arguments, arg_problems = _arguments(raw_args, name.strip(), text_expected=arguments_are_text)
    problems.extend(arg_problems)
    if arguments is None:
        return None, problems
    return ToolCall(id=call_id or new_call_id(), name=name.strip(), arguments=arguments), problems


def _arguments(raw: Any, name: str, *, text_expected: bool) -> tuple[dict[str, Any] | None, list[ParseProblem]]:
    if raw is None:
        return {}, []
    if isinstance(raw, dict):
        return raw, []
    if not isinstance(raw, str):
        return None, [
            ParseProblem(
                kind="bad_arguments",
                message=f'"arguments" of {name!r} must be a JSON object, got {_json_type(raw)}',
                snippet=_snippet(_short_repr(raw)),
            )
        ]
    if not raw.strip():
        return {}, []
    try:
        value, repairs = loads_lenient(raw)
    except ValueError as exc:
        return None, [
            ParseProblem(
                kind="bad_arguments",
                message=f'"arguments" of {name!r} is a string that is not a JSON object ({exc})',
                snippet=_snippet(raw),
            )
        ]
    if "truncated" in repairs and ends_inside_string(raw):
        return None, [_cut_off(f'"arguments" of {name!r}', raw, kind="bad_arguments")]
    if not isinstance(value, dict):
        return None, [
            ParseProblem(
                kind="bad_arguments",
                message=f'"arguments" of {name!r} must be a JSON object, got a string holding {_json_type(value)}',
                snippet=_snippet(raw),
            )
        ]
    notes = ([] if text_expected else ["arguments_as_string"]) + repairs
    if not notes:
        return value, []
    return value, [
        ParseProblem(
            kind="repaired_json",
            message=f"arguments of {name!r} needed repairs ({', '.join(notes)})",
            snippet=_snippet(raw),
            fatal=False,
        )
    ]


def _cut_off(what: str, text: str, *, kind: str = "invalid_json") -> ParseProblem:
    """A call that stops inside a string never runs: completing it would act on half an argument."""
    return ParseProblem(
        kind=kind,  # type: ignore[arg-type]
        message=f"{what} was cut off inside a string (output limit reached?); it did not run: write the whole call again",
        snippet=_snippet(text),
        fatal=True,
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not break parsing
        text = f"<{type(value).__name__}>"
    return text


def _snippet(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 3] + "..."
