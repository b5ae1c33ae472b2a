"""Task format: the published JSON Schema, the smoke suite's files, and error messages that
name the file, the line and the field."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from omni_agent.eval.loading import TaskFileError, load_suite, load_task, load_task_text
from omni_agent.eval.policy import reference_outputs
from omni_agent.eval.task import schema_text, substitute
from omni_agent.exceptions import UserError
from omni_agent.parsing import parse_output

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "tasks" / "smoke"


def test_published_schema_is_current() -> None:
    published = (REPO / "tasks" / "schema.json").read_text(encoding="utf-8")
    assert published == schema_text(), "regenerate: python -m omni_agent.eval.cli schema > tasks/schema.json"


def test_smoke_suite_covers_every_kind_and_has_reference_solutions() -> None:
    tasks = load_suite(SMOKE)
    assert len(tasks) >= 12
    assert {"shell", "browser", "desktop", "files", "mixed"} <= {t.category for t in tasks}
    schema = json.loads((REPO / "tasks" / "schema.json").read_text())
    for t in tasks:
        assert t.reference, f"{t.id} has no reference solution"
        data = yaml.safe_load(Path(t.source).read_text())
        jsonschema.validate(data, schema)  # the published schema accepts the shipped files
        # Every reference call renders as Qwen text that the project's parser reads back.
        outputs = reference_outputs(t, {"server_url": "http://127.0.0.1:1", "workspace": "/w", "port": 1})
        for step, text in zip(t.reference, outputs):
            parsed = parse_output(text)
            assert [c.name for c in parsed.calls] == [c.name for c in step.calls]
            assert not [p for p in parsed.problems if p.fatal]


def test_bad_task_file_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: demo\ninstruction: hello\ntools: [shell]\nlimits:\n  steps: 0\nchecks:\n"
        "  - type: answer\n    equals: x\n  - type: file\n    pth: a.txt\n  - type: bogus\n"
    )
    with pytest.raises(TaskFileError) as info:
        load_task(bad)
    problems = {(line, field) for line, field, _ in info.value.problems}
    assert (5, "limits.steps") in problems
    assert (10, "checks[1].pth") in problems  # extra field, on its own line
    assert (9, "checks[1].path") in problems  # missing field: the line of its check
    assert (11, "checks[2]") in problems  # unknown check type
    assert f"{bad}:5: limits.steps:" in str(info.value)


def test_invalid_yaml_and_non_mapping_get_a_line() -> None:
    with pytest.raises(TaskFileError) as info:
        load_task_text("id: x\ninstruction: [unclosed\n", source="t.yaml")
    assert info.value.problems[0][0] is not None and "not valid YAML" in str(info.value)
    with pytest.raises(TaskFileError, match="must be a YAML mapping"):
        load_task_text("- a\n- b\n", source="t.yaml")


def test_task_needs_checks_and_unique_ids(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="at least one check"):
        load_task_text("id: x\ninstruction: hi\n", source="t.yaml")
    body = "instruction: hi\nchecks:\n  - type: answer\n    equals: a\n"
    (tmp_path / "a.yaml").write_text("id: same\n" + body)
    (tmp_path / "b.yaml").write_text("id: same\n" + body)
    with pytest.raises(UserError, match="duplicate task id"):
        load_suite(tmp_path)


def test_substitute_replaces_known_names_only() -> None:
    values = {"server_url": "http://127.0.0.1:8000"}
    assert substitute("{server_url}/a {x} {'k': 1}", values) == "http://127.0.0.1:8000/a {x} {'k': 1}"
    assert substitute({"a": ["{server_url}"]}, values) == {"a": ["http://127.0.0.1:8000"]}


def test_unknown_tool_set_and_unclosed_quote_point_at_their_lines() -> None:
    with pytest.raises(TaskFileError) as info:
        load_task_text("id: x\ninstruction: hi\ntools: [shell, shel]\nchecks:\n  - type: answer\n    equals: a\n", source="t.yaml")
    assert "t.yaml:3: tools: unknown tool set 'shel'" in str(info.value)
    with pytest.raises(TaskFileError) as info:
        load_task_text('id: x\ninstruction: "unclosed\nchecks:\n  - type: answer\n    equals: a\n', source="t.yaml")
    assert "starts on line 2" in str(info.value)
