"""Result types of the tool-call parser: problems are data, never exceptions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..messages import ToolCall

ProblemKind = Literal[
    "invalid_json",  # the block's JSON could not be read even after repairs
    "missing_name",  # a block without a usable "name"
    "bad_arguments",  # "arguments" is neither an object nor a JSON string of one
    "unclosed_block",  # <tool_call> without </tool_call> (accepted if it parsed, reported as a note)
    "repaired_json",  # the JSON needed a repair (note only: the call is kept)
    "leaked_token",  # template tokens such as <|im_end|> were removed from the text
    "stray_tag",  # a </tool_call> without an opening tag
    "call_in_thinking",  # <tool_call> inside <think> (ignored on purpose)
]


class ParseProblem(BaseModel):
    kind: ProblemKind
    message: str
    snippet: str = ""
    """The offending text, shortened."""
    fatal: bool = True
    """False for notes about repairs: the call was still recovered."""


class ParsedOutput(BaseModel):
    """Raw Thinker text split into what the user sees, what the model thought, and its calls."""

    visible_text: str = ""
    thinking: str | None = None
    calls: list[ToolCall] = Field(default_factory=list)
    problems: list[ParseProblem] = Field(default_factory=list)

    @property
    def errors(self) -> list[ParseProblem]:
        return [p for p in self.problems if p.fatal]
