"""Model selection strings: parsing every scheme, bad specs, and loading what they name."""

from __future__ import annotations

import asyncio

from pathlib import Path

import pytest

from omni_agent.exceptions import ModelUnavailableError, UserError
from omni_agent.messages import UserMessage
from omni_agent.models.base import ModelRequest
from omni_agent.models.openai_compat import OpenAICompatModel
from omni_agent.models.spec import MODEL_SCHEMES, ModelSpec, load_model, parse_model_spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("qwen-omni:/models/Qwen3-Omni-30B-A3B-Instruct", ModelSpec(scheme="qwen-omni", target="/models/Qwen3-Omni-30B-A3B-Instruct")),
        ("qwen-omni:Qwen/Qwen2.5-Omni-7B", ModelSpec(scheme="qwen-omni", target="Qwen/Qwen2.5-Omni-7B")),
        (
            "qwen-omni:/ckpt?device_map=cuda&enable_talker=false&max_pixels=1003520&dtype=bfloat16",
            ModelSpec(
                scheme="qwen-omni",
                target="/ckpt",
                options={"device_map": "cuda", "enable_talker": False, "max_pixels": 1003520, "dtype": "bfloat16"},
            ),
        ),
        ("QWEN-VL:./vl ", ModelSpec(scheme="qwen-vl", target="./vl")),
        ("openai:http://127.0.0.1:8000/v1#qwen3-omni", ModelSpec(scheme="openai", target="http://127.0.0.1:8000/v1", name="qwen3-omni")),
        ("openai:https://api.example.com/v1/", ModelSpec(scheme="openai", target="https://api.example.com/v1")),
        (
            "openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-Omni-30B-A3B-Instruct?timeout=30&api_key_env=MY_KEY",
            ModelSpec(
                scheme="openai",
                target="http://127.0.0.1:8000/v1",
                name="Qwen/Qwen3-Omni-30B-A3B-Instruct",
                options={"timeout_s": 30, "api_key_env": "MY_KEY"},
            ),
        ),
        (
            "openai:http://h:1/v1?retries=0&can_hear=no#m?tool_choice=none&backoff=0.25",
            ModelSpec(
                scheme="openai",
                target="http://h:1/v1",
                name="m",
                options={"max_retries": 0, "can_hear": False, "tool_choice": "none", "backoff_s": 0.25},
            ),
        ),
        ("scripted:tests/data/steps.yaml", ModelSpec(scheme="scripted", target="tests/data/steps.yaml")),
        ("scripted:C:\\runs\\steps.json", ModelSpec(scheme="scripted", target="C:\\runs\\steps.json")),
    ],
)
def test_valid_specs_parse(text, expected):
    assert parse_model_spec(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "qwen-omni:/ckpt?device_map=cuda&enable_talker=false",
        "openai:http://127.0.0.1:8000/v1#qwen?timeout_s=30&can_hear=false",
        "scripted:steps.yaml",
    ],
)
def test_spec_strings_round_trip(text):
    parsed = parse_model_spec(text)
    assert parse_model_spec(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty model spec"),
        ("   ", "empty model spec"),
        ("llama:/x", r"'llama'.*qwen-omni:.*qwen-vl:.*openai:.*scripted:"),
        ("gpt-4o", r"no scheme.*use one of"),
        ("http://127.0.0.1:8000/v1", r"did you mean openai:http://127.0.0.1:8000/v1#MODEL-NAME"),
        ("/models/ckpt", r"did you mean qwen-omni:/models/ckpt"),
        ("qwen-omni:", r"names nothing after 'qwen-omni:'"),
        ("scripted: ?a=1", r"names nothing after 'scripted:'"),
        ("openai:127.0.0.1:8000/v1#m", r"API root URL"),
        ("openai:#m", r"API root URL"),
        ("openai:http://h/v1#m?temperature=0.2", r"unknown option 'temperature'; valid: .*timeout"),
        ("openai:http://h/v1#m?api_key=sk-123", r"do not put an API key.*api_key_env"),
        ("openai:http://h/v1?timeout=1#m?timeout=2", r"sets option 'timeout' twice"),
        ("openai:http://h/v1#m?timeout=1&timeout_s=2", r"sets option 'timeout_s' twice"),
        ("qwen-omni:/c?a=1&a=2", r"sets option 'a' twice"),
        ("qwen-omni:/c?justaword", r"key=value pairs"),
        ("qwen-omni:/c?9x=1", r"not an identifier"),
    ],
)
def test_bad_specs_are_user_errors(text, match):
    with pytest.raises(UserError, match=match):
        parse_model_spec(text)


def test_every_scheme_is_documented_in_errors():
    with pytest.raises(UserError) as info:
        parse_model_spec("nope:x")
    for scheme in MODEL_SCHEMES:
        assert f"{scheme}:" in str(info.value)


def test_load_openai_spec_applies_options_and_talks_to_the_server(openai_server, monkeypatch):
    monkeypatch.setenv("MY_TEST_KEY", "sk-spec")
    spec = f"openai:{openai_server.base_url}#served-name?timeout=7.5&retries=1&backoff=0.01&api_key_env=MY_TEST_KEY&can_hear=false"
    model = load_model(spec)
    assert isinstance(model, OpenAICompatModel)
    assert (model.timeout_s, model.max_retries, model.backoff_s, model.info.can_hear) == (7.5, 1, 0.01, False)
    openai_server.reply_error(503, "busy")
    openai_server.reply_chat("hello from spec")

    async def go() -> str:
        try:
            return (await model.complete(ModelRequest(messages=[UserMessage("hi")]))).text
        finally:
            await model.aclose()

    assert asyncio.run(go()) == "hello from spec"
    first = openai_server.requests[0]
    assert first.json["model"] == "served-name" and first.headers["authorization"] == "Bearer sk-spec"


def test_load_openai_overrides_win_over_the_string():
    model = load_model("openai:http://127.0.0.1:8000/v1#m?timeout=30", timeout_s=2.0, api_key="k")
    assert model.timeout_s == 2.0 and model.api_key == "k"
    with pytest.raises(UserError, match=r"cannot load .*unexpected keyword argument .temprature.*valid options: .*timeout_s"):
        load_model("openai:http://127.0.0.1:8000/v1#m", temprature=0.1)


def test_load_openai_missing_key_env_is_clear(monkeypatch):
    monkeypatch.delenv("NOT_SET_KEY_FOR_TEST", raising=False)
    with pytest.raises(UserError, match="environment variable NOT_SET_KEY_FOR_TEST .* is not set"):
        load_model("openai:http://127.0.0.1:8000/v1#m?api_key_env=NOT_SET_KEY_FOR_TEST")


def test_load_scripted_spec(tmp_path):
    script = tmp_path / "steps.json"
    script.write_text('["<tool_call>\\n{\\"name\\": \\"click\\", \\"arguments\\": {}}\\n</tool_call>", "done"]')
    model = load_model("scripted:steps.json", base_dir=tmp_path)
    assert model.info.backend == "scripted" and model.info.is_scripted
    text = asyncio.run(model.complete(ModelRequest(messages=[UserMessage("go")]))).text
    assert text.startswith("<tool_call>")
    with pytest.raises(UserError, match=r"scripted model file not found: .*missing.json"):
        load_model("scripted:missing.json", base_dir=tmp_path)


def test_load_qwen_spec_with_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(ModelUnavailableError, match=r"checkpoint not found: .*nope.*hub id ORG/NAME"):
        load_model(f"qwen-omni:{tmp_path / 'nope'}")
    with pytest.raises(ModelUnavailableError, match=r"checkpoint not found"):
        load_model("qwen-vl:not a hub id")
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"0")
    with pytest.raises(ModelUnavailableError, match="is a file; qwen-omni: needs a checkpoint directory"):
        load_model(f"qwen-omni:{a_file}")


def test_unknown_options_are_refused_before_loading(tmp_path):
    script = tmp_path / "s.json"
    script.write_text('["hi"]')
    with pytest.raises(UserError, match=r"unexpected keyword argument 'speed'.*valid options: name"):
        load_model(f"scripted:{script}?speed=2")
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(UserError, match=r"cannot load 'qwen-omni:.*colour.*valid options: .*device_map"):
        load_model("qwen-omni:ckpt?colour=red", base_dir=tmp_path)


@pytest.mark.slow
def test_load_qwen_vl_spec_through_the_runtime(tiny_qwen3_vl_dir):
    """The spec reaches the real loading code with its options (a tiny random Qwen3-VL)."""
    spec = f"qwen-vl:{tiny_qwen3_vl_dir.name}?device_map=cpu&dtype=float32&name=tiny-vl"
    model = load_model(spec, base_dir=tiny_qwen3_vl_dir.parent)  # a relative path, as in a task file
    assert model.info.name == "tiny-vl" and model.info.backend == "qwen-omni"
    assert model.info.extra["family"] == "qwen3_vl"
    assert model.info.can_see and not model.info.can_hear


def test_eval_model_paths_resolve_against_task_folder_or_working_directory(tmp_path, monkeypatch):
    """A task file's ``model:`` is relative to the task's folder; ``--model`` to where the command ran."""
    from omni_agent.eval.episode import EpisodeJob, run_episode
    from omni_agent.eval.loading import load_suite

    suite, cwd = tmp_path / "suite", tmp_path / "cwd"
    suite.mkdir()
    cwd.mkdir()
    (suite / "own.json").write_text('["from the task folder"]')
    (cwd / "cli.yaml").write_text("- from the working directory\n")
    task = "category: c\ninstruction: hi\nlimits: {steps: 2, seconds: 30}\nchecks:\n- type: answer\n  equals: x\n"
    (suite / "a.yaml").write_text("id: own-model\nmodel: scripted:own.json\n" + task)
    (suite / "b.yaml").write_text("id: cli-model\n" + task)
    monkeypatch.chdir(cwd)
    answers = {}
    for t in load_suite(str(suite)):
        job = EpisodeJob(task=t, model="scripted:cli.yaml", episode_id=t.id, episode_dir=str(tmp_path / "ep" / t.id),
                         run_dir=str(tmp_path / "ep"))  # fmt: skip
        result = run_episode(job)
        answers[t.id] = result.answer or result.error
    assert answers == {"own-model": "from the task folder", "cli-model": "from the working directory"}



@pytest.mark.slow
def test_cli_model_errors_are_one_line_each(tmp_path, tiny_qwen3_vl_dir):
    """A wrong checkpoint path, a config of another architecture, and speech asked of a checkpoint
    without a Talker: `omni-agent run` says what is wrong in one line, no traceback."""
    import subprocess
    import sys

    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    exe = str(Path(sys.executable).parent / "omni-agent")
    cases = {
        f"qwen-omni:{tmp_path / 'nope'}": "checkpoint not found",
        "qwen-omni:./llama": "unsupported model_type 'llama'",
        f"qwen-omni:{tiny_qwen3_vl_dir}?talker=true": "has no Talker (Qwen3-VL checkpoints cannot speak)",
    }
    for spec, message in cases.items():
        proc = subprocess.run([exe, "run", "hi", "--model", spec, "--tools", "files", "-w", str(tmp_path)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "COLUMNS": "400", "NO_COLOR": "1"})  # fmt: skip
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr
        assert len(errors) == 1 and message in errors[0], proc.stderr
