"""Fuzzing: thousands of random and mutated model outputs (corpus entries truncated, with
flipped characters, inserted tags, odd unicode) go through parse_output, StreamParser,
calls_from_openai and validate_call. Nothing may raise; every problem is data, and the stream
still agrees with parse_output. Seeded (OMNI_FUZZ_SEED to explore other seeds)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel

from omni_agent.messages import ToolCall
from omni_agent.parsing import CallReady, ParsedOutput, ParseProblem, Problem, StreamParser, TextDelta, calls_from_openai, parse_output
from omni_agent.registry import ToolRegistry
from omni_agent.tool import tool
from omni_agent.validation import CallValidation, validate_call

SEED = int(os.environ.get("OMNI_FUZZ_SEED", "20240611"))
N_TEXT_INPUTS = 2000
N_ARGUMENT_INPUTS = 2000
CORPUS = [yaml.safe_load(p.read_text(encoding="utf-8"))["raw"] for p in sorted((Path(__file__).parent / "parser_corpus").glob("*.yaml"))]
TAGS = ["<tool_call>", "</tool_call>", "<think>", "</think>", "<|im_end|>", "<|im_start|>assistant\n", "<|endoftext|>", "```json\n", "```", "<tool_", "</", "<|"]
ODD = ["\x00", "\ud800", "\u202e", "\ufeff", "🌍", "你好", "é", "\r\n", "\t", "\\", '"', "'", "{", "}", "[", "]", ",", ":", "True", "None", "NaN", "1e999", "-0"]


class Point(BaseModel):
    x: int
    y: int


@tool
def get_weather(city: str, unit: Literal["c", "f"] = "c", days: int = 1) -> str:
    """Weather."""
    return city


@tool
def click(x: int, y: int, button: Literal["left", "right"] = "left", modifiers: list[str] = []) -> str:
    """Click."""
    return ""


@tool
def draw(points: list[Point], closed: bool = False, label: Optional[str] = None, style: dict[str, float] = {}) -> str:
    """Draw."""
    return ""


@tool
def screenshot() -> str:
    """Screenshot."""
    return ""


REGISTRY = ToolRegistry([get_weather, click, draw, screenshot])


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randint(0, len(text))
        if op == 0:
            text = text[:pos]
        elif op == 1 and text:
            i = rng.randrange(len(text))
            text = text[:i] + chr(ord(text[i]) ^ (1 << rng.randrange(7))) + text[i + 1 :]
        elif op == 2:
            text = text[:pos] + rng.choice(TAGS) + text[pos:]
        elif op == 3:
            text = text[:pos] + rng.choice(ODD) + text[pos:]
        elif op == 4 and text:
            end = rng.randint(pos, min(len(text), pos + 20))
            text = text[:pos] + text[end:]
        elif op == 5:
            end = rng.randint(pos, min(len(text), pos + 30))
            text = text[:end] + text[pos:end] + text[end:]
        else:
            text = text[:pos] + "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 5))) + text[pos:]
    return text


def random_text(rng: random.Random) -> str:
    pieces = TAGS + ODD + ['{"name": "click", "arguments": {"x": 1, "y": 2}}', "hello", " ", "\n", "arguments", "name"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))


def text_inputs() -> list[str]:
    rng = random.Random(SEED)
    inputs = [mutate(rng.choice(CORPUS), rng) for _ in range(N_TEXT_INPUTS * 3 // 4)]
    inputs += [random_text(rng) for _ in range(N_TEXT_INPUTS - len(inputs))]
    inputs += ["{" * 3000 + "<tool_call>" + "[" * 3000, "<tool_call>" + "{" * 3000, "<tool_call>" + '"' * 5000, "<" * 2000]
    return inputs


def check_problems(problems: list[ParseProblem]) -> None:
    for p in problems:
        assert isinstance(p, ParseProblem) and p.message
        assert "internal parser error" not in p.message, p.message


def check_validation(result: CallValidation) -> None:
    assert isinstance(result, CallValidation)
    assert result.ok == (not result.issues)
    assert result.ok or result.message


def test_fuzz_parser_stream_and_validator_never_raise() -> None:
    rng = random.Random(SEED + 1)
    inputs = text_inputs()
    assert len(inputs) >= 1000
    calls_seen = 0
    for text in inputs:
        out = parse_output(text)
        assert isinstance(out, ParsedOutput)
        check_problems(out.problems)
        thinking_mode = rng.random() < 0.3
        reference = parse_output(text, starts_in_thinking=thinking_mode)
        parser = StreamParser(starts_in_thinking=thinking_mode)
        events: list[Any] = []
        pos = 0
        while pos < len(text):
            size = rng.randint(1, 16)
            events += parser.feed(text[pos : pos + size])
            pos += size
        events += parser.close()
        assert "".join(e.text for e in events if isinstance(e, TextDelta) and e.channel == "visible") == reference.visible_text
        assert [(e.call.name, e.call.arguments) for e in events if isinstance(e, CallReady)] == [
            (c.name, c.arguments) for c in reference.calls
        ]
        check_problems([e.problem for e in events if isinstance(e, Problem)])
        for call in out.calls:
            calls_seen += 1
            check_validation(validate_call(call, REGISTRY))
    assert calls_seen > 200  # the mutations keep many calls readable, so validation is exercised too


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 7, 2**70, 3.0, 2.5, -1e308, float("nan"), float("inf")])
    if kind == 3:
        return rng.choice(["", "5", "4.0", "true", "nan", "left", "c", "[1]", '{"x": 1, "y": 2}', "\ud800", "x" * 1000])
    if kind in (4, 5):
        return rng.choice(["Paris", "f", "right", "label"])
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["x", "y", "points", "city", "", "\x00", "unit"]): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_fuzz_validator_with_random_arguments() -> None:
    rng = random.Random(SEED + 2)
    names = [*REGISTRY.names, "get_wether", "", "x" * 300]
    for _ in range(N_ARGUMENT_INPUTS):
        name = rng.choice(names)
        t = REGISTRY.get(name)
        keys = list(t.parameters["properties"]) if t else []
        arguments = {rng.choice(keys + ["bogus"]) if keys else "bogus": random_json(rng) for _ in range(rng.randint(0, 5))}
        check_validation(validate_call(ToolCall(name=name, arguments=arguments), REGISTRY))


def test_fuzz_openai_tool_calls() -> None:
    rng = random.Random(SEED + 3)
    for _ in range(500):
        items = []
        for _ in range(rng.randint(0, 4)):
            arguments = rng.choice([json.dumps(random_json(rng)), mutate('{"x": 1, "y": 2}', rng), random_json(rng)])
            item = {"id": rng.choice([None, "", "c1", 5]), "type": "function", "function": {"name": rng.choice(["click", "", None, 3]), "arguments": arguments}}
            items.append(rng.choice([item, item["function"], random_json(rng)]))
        calls, problems = calls_from_openai(items)
        check_problems(problems)
        for call in calls:
            check_validation(validate_call(call, REGISTRY))
