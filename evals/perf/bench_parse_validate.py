"""Benchmark: parse + validate per agent step.

One step = ``parse_output`` of a Thinker output holding 5 tool calls (with a sentence of visible
text) + ``validate_call`` of each call against a registry of 30 tools. Target: under 1 ms per
step on the project's 2-core machine. Also measured: the same step when every call needs JSON
repairs (the slow path), and the stream parser fed token-sized chunks.

Run: ``.venv/bin/python evals/perf/bench_parse_validate.py [--iterations N]``
"""

from __future__ import annotations

import argparse
import enum
import json
import statistics
import time
from typing import Annotated, Callable, Literal, Optional

from pydantic import BaseModel, Field

from omni_agent.parsing import StreamParser, parse_output
from omni_agent.registry import ToolRegistry
from omni_agent.tool import Tool, tool
from omni_agent.machine import describe_machine
from omni_agent.validation import validate_call


class Unit(enum.Enum):
    C = "c"
    F = "f"


class Point(BaseModel):
    x: int
    y: int


def build_registry() -> ToolRegistry:
    """30 tools: 5 hand-written signatures of realistic shape plus 25 generated variants."""

    @tool
    def get_weather(city: str, unit: Unit = Unit.C, days: Annotated[int, Field(ge=1, le=14)] = 1) -> str:
        """Weather forecast for a city."""
        return city

    @tool
    def computer_use(
        action: Literal["left_click", "right_click", "type", "key", "scroll", "wait"],
        coordinate: Optional[list[int]] = None,
        text: Optional[str] = None,
        pixels: int = 0,
    ) -> str:
        """Act on the screen."""
        return action

    @tool
    def draw_path(points: list[Point], closed: bool = False, color: str = "#000000") -> str:
        """Draw a path."""
        return ""

    @tool
    def search(query: Annotated[str, Field(min_length=1, max_length=200)], limit: int = 5, site: Optional[str] = None) -> str:
        """Web search."""
        return query

    @tool
    def write_file(path: str, content: str, append: bool = False) -> str:
        """Write a file."""
        return path

    tools: list[Tool] = [get_weather, computer_use, draw_path, search, write_file]
    for i in range(25):
        schema = {
            "name": f"tool_{i:02d}",
            "description": f"Generated tool {i}.",
            "parameters": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "count": {"type": "integer", "minimum": 0},
                    "ratio": {"type": "number"},
                    "enabled": {"type": "boolean"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name"],
                "additionalProperties": False,
            },
        }
        tools.append(Tool.from_schema(schema, lambda **kw: "ok"))
    return ToolRegistry(tools)


CALLS = [
    {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c", "days": 3}},
    {"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [512, 384]}},
    {"name": "draw_path", "arguments": {"points": [{"x": 1, "y": 2}, {"x": 30, "y": 40}, {"x": 5, "y": 6}], "closed": True}},
    {"name": "search", "arguments": {"query": "qwen3 omni tool calling", "limit": 3}},
    {"name": "tool_17", "arguments": {"name": "report", "count": 2, "ratio": 0.5, "tags": ["a", "b"]}},
]


def well_formed_output() -> str:
    blocks = "\n".join(f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in CALLS)
    return f"I'll do these five things at once.\n{blocks}"


def repaired_output() -> str:
    """Every block needs a repair: single quotes, trailing comma, extra brace, string arguments."""
    blocks = []
    for i, c in enumerate(CALLS):
        text = json.dumps(c)
        if i % 4 == 0:
            text = text.replace('"', "'")
        elif i % 4 == 1:
            text = text[:-2] + ",}}"
        elif i % 4 == 2:
            text += "}"
        else:
            text = json.dumps({"name": c["name"], "arguments": json.dumps(c["arguments"])})
        blocks.append(f"<tool_call>\n{text}\n</tool_call>")
    return "Doing it.\n" + "\n".join(blocks) + "<|im_end|>"


def step(text: str, registry: ToolRegistry) -> None:
    parsed = parse_output(text)
    if len(parsed.calls) != 5:
        raise SystemExit(f"benchmark input broken: {len(parsed.calls)} calls, {parsed.problems}")
    for call in parsed.calls:
        if not validate_call(call, registry).ok:
            raise SystemExit(f"benchmark input broken: {validate_call(call, registry).message}")


def stream_step(chunks: list[str]) -> None:
    parser = StreamParser()
    for chunk in chunks:
        parser.feed(chunk)
    parser.close()


def measure(fn: Callable[[], None], iterations: int) -> tuple[float, float]:
    for _ in range(min(200, iterations)):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e3, times[int(len(times) * 0.95)] * 1e3


def machine() -> str:
    return describe_machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=3000)
    args = ap.parse_args()
    registry = build_registry()
    assert len(registry) == 30
    good, bad = well_formed_output(), repaired_output()
    tokens = [good[i : i + 4] for i in range(0, len(good), 4)]  # ~4 characters per token
    parsed = parse_output(good)
    rows = [
        ("parse + validate, 5 calls, 30 tools", lambda: step(good, registry)),
        ("  parse_output only", lambda: parse_output(good)),
        ("  validate_call x5 only", lambda: [validate_call(c, registry) for c in parsed.calls]),
        ("parse + validate, 5 calls needing repairs", lambda: step(bad, registry)),
        (f"StreamParser, {len(tokens)} token-sized chunks", lambda: stream_step(tokens)),
    ]
    print(f"machine: {machine()}")
    print(f"iterations: {args.iterations} per row (after warm-up)")
    print(f"{'case':48s} {'median ms':>10s} {'p95 ms':>10s}")
    for label, fn in rows:
        median, p95 = measure(fn, args.iterations)
        print(f"{label:48s} {median:10.3f} {p95:10.3f}")
    median, _ = measure(lambda: step(good, registry), args.iterations)
    print(f"target < 1 ms per step: {'met' if median < 1.0 else 'NOT met'} (median {median:.3f} ms)")


if __name__ == "__main__":
    main()
