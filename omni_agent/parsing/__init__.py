"""Model output -> tool calls: the Qwen text format, streamed text, and OpenAI ``tool_calls``."""

from .lenient_json import loads_lenient
from .openai import calls_from_openai
from .qwen import parse_output
from .stream import CallReady, Problem, StreamEvent, StreamParser, TextDelta
from .types import ParsedOutput, ParseProblem

__all__ = [
    "CallReady",
    "ParseProblem",
    "ParsedOutput",
    "Problem",
    "StreamEvent",
    "StreamParser",
    "TextDelta",
    "calls_from_openai",
    "loads_lenient",
    "parse_output",
]
