"""The parser corpus: realistic raw Thinker outputs (well-formed, malformed, thinking, plain
answers) in tests/parser_corpus/*.yaml, each with the calls, visible text, thinking and problem
kinds it must produce. The stream parser must give the same result for any chunking."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from omni_agent.parsing import CallReady, Problem, StreamParser, TextDelta, parse_output
from omni_agent.parsing.qwen import thinking_opened_by_template

CORPUS_DIR = Path(__file__).parent / "parser_corpus"
FATAL_KINDS = {"invalid_json", "missing_name", "bad_arguments"}


def load_corpus() -> list[tuple[str, dict[str, Any]]]:
    return [(p.stem, yaml.safe_load(p.read_text(encoding="utf-8"))) for p in sorted(CORPUS_DIR.glob("*.yaml"))]


CORPUS = load_corpus()


def test_corpus_is_large_and_covers_every_problem_kind() -> None:
    assert len(CORPUS) >= 40
    kinds = {k for _, e in CORPUS for k in e["expect"]["problems"]}
    assert kinds >= {
        "invalid_json", "missing_name", "bad_arguments", "unclosed_block", "repaired_json",
        "leaked_token", "stray_tag", "call_in_thinking",
    }
    repairs = {r for _, e in CORPUS for r in e["expect"].get("repairs", [])}
    assert repairs >= {
        "arguments_as_string", "code_fence", "single_quotes", "trailing_comma", "extra_closing_brace",
        "python_literals", "variant_keys", "truncated",
    }
    assert sum(1 for _, e in CORPUS if len(e["expect"]["calls"]) >= 2) >= 5
    assert sum(1 for _, e in CORPUS if e["expect"]["thinking"] is not None) >= 5
    assert sum(1 for _, e in CORPUS if not e["expect"]["calls"] and not e["expect"]["problems"]) >= 5


@pytest.mark.parametrize(("name", "entry"), CORPUS, ids=[n for n, _ in CORPUS])
def test_corpus_entry(name: str, entry: dict[str, Any]) -> None:
    expect = entry["expect"]
    out = parse_output(entry["raw"], starts_in_thinking=entry.get("starts_in_thinking"))
    assert out.visible_text == expect["visible_text"]
    assert out.thinking == expect["thinking"]
    assert [(c.name, c.arguments) for c in out.calls] == [(c["name"], c["arguments"]) for c in expect["calls"]]
    assert Counter(p.kind for p in out.problems) == Counter(expect["problems"])
    for problem in out.problems:
        assert problem.fatal == (problem.kind in FATAL_KINDS), problem
        assert problem.message
    repair_notes = " ".join(p.message for p in out.problems if p.kind == "repaired_json")
    for repair in expect.get("repairs", []):
        assert repair in repair_notes
    # Fresh, distinct ids; no tag or template token ever reaches the visible text.
    assert len({c.id for c in out.calls}) == len(out.calls)
    assert all(c.id.startswith("call_") for c in out.calls)
    for marker in ("<tool_call", "</tool_call", "<think", "</think", "<|"):
        assert marker not in out.visible_text


@pytest.mark.parametrize(("name", "entry"), CORPUS, ids=[n for n, _ in CORPUS])
def test_corpus_entry_streamed_in_any_chunking(name: str, entry: dict[str, Any]) -> None:
    raw = entry["raw"]
    expected = parse_output(raw, starts_in_thinking=entry.get("starts_in_thinking"))
    # A stream cannot look ahead for a lone </think>: the caller says whether the template opened it.
    starts_in_thinking = entry.get("starts_in_thinking")
    if starts_in_thinking is None:
        starts_in_thinking = thinking_opened_by_template(raw)
    rng = random.Random(name)
    chunkings = [[raw[i : i + 1] for i in range(len(raw))], [raw]]
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, max(2, len(raw))), k=min(len(raw) - 1, rng.randint(1, 12)))) if len(raw) > 2 else []
        chunkings.append([raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])])
    for chunks in chunkings:
        parser = StreamParser(starts_in_thinking=starts_in_thinking)
        events = [e for c in chunks for e in parser.feed(c)] + parser.close()
        visible = "".join(e.text for e in events if isinstance(e, TextDelta) and e.channel == "visible")
        thinking = "".join(e.text for e in events if isinstance(e, TextDelta) and e.channel == "thinking")
        calls = [(e.call.name, e.call.arguments) for e in events if isinstance(e, CallReady)]
        problems = Counter(e.problem.kind for e in events if isinstance(e, Problem))
        assert visible == expected.visible_text
        assert thinking == (expected.thinking or "")
        assert calls == [(c.name, c.arguments) for c in expected.calls]
        assert problems == Counter(p.kind for p in expected.problems)
