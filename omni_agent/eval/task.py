"""The evaluation task format: one YAML file per task, validated by these pydantic models.

A task says what the agent is asked (``instruction``), which tools it gets (``tools``), how the
episode's world is prepared (``setup``) and cleaned up (``teardown``), how long it may take
(``limits``), how a reference policy solves it (``reference``) and how success is judged
(``checks``). ``tasks/schema.json`` is generated from these models (:func:`task_json_schema`)
so editors can validate task files; a test keeps the published file in sync.

Strings in the instruction, the reference calls, the checks and the shell commands may name
values known only once the episode is set up: ``{workspace}``, ``{server_url}``, ``{port}``,
``{display}`` and the names under ``setup.browser.values``. Only these names are replaced, so
other braces (JSON, JavaScript) pass through untouched.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AnswerCheck",
    "BrowserDomCheck",
    "BrowserSetup",
    "BrowserUrlCheck",
    "Check",
    "CommandCheck",
    "DesktopSetup",
    "ExpectedCall",
    "FileCheck",
    "FileSpec",
    "Instruction",
    "Limits",
    "ReferenceCall",
    "ReferenceStep",
    "Setup",
    "Task",
    "ToolCallsCheck",
    "WebSetup",
    "substitute",
    "task_json_schema",
]

TASK_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------
# instruction, limits, setup
# ------------------------------------------------------------------------------------------
class Instruction(_Strict):
    """What the agent is asked: text, a spoken request (audio file), or both."""

    text: str | None = None
    audio: str | None = Field(None, description="Audio file (wav/flac/mp3), relative to the task file.")

    @model_validator(mode="after")
    def _one_of(self) -> "Instruction":
        if not self.text and not self.audio:
            raise ValueError("an instruction needs text, audio, or both")
        return self


class Limits(_Strict):
    steps: int = Field(10, ge=1, le=500, description="Most model turns in the episode.")
    seconds: float = Field(120.0, gt=0, le=24 * 3600, description="Wall-clock limit of the agent run.")


class FileSpec(_Strict):
    """A workspace file: literal ``content``, or a ``source`` file copied from beside the task."""

    content: str | None = None
    source: str | None = Field(None, description="Path relative to the task file.")
    executable: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> "FileSpec":
        if (self.content is None) == (self.source is None):
            raise ValueError("give exactly one of content or source")
        return self


class WebSetup(_Strict):
    """A local web site served on 127.0.0.1 for the episode; its address is ``{server_url}``.

    Static ``pages`` (name -> HTML) and/or a ``dir`` (relative to the task file) are served by a
    small HTTP server; or ``app`` is a command that serves on ``{port}`` itself.
    """

    pages: dict[str, str] = Field(default_factory=dict)
    dir: str | None = None
    app: str | None = Field(None, description="Command that serves on {port} (runs in the workspace).")
    ready_path: str = Field("/", description="Path polled until the server answers.")

    @model_validator(mode="after")
    def _something(self) -> "WebSetup":
        if not self.pages and not self.dir and not self.app:
            raise ValueError("web setup needs pages, dir or app")
        if self.app and (self.pages or self.dir):
            raise ValueError("give either app, or pages/dir, not both")
        return self


class BrowserSetup(_Strict):
    """Opens a page in the episode's browser before the agent starts."""

    url: str = Field(description="May use {server_url} or file:// URLs.")
    wait_for: str | None = Field(None, description="CSS selector to wait for after loading.")
    init_js: list[str] = Field(default_factory=list, description="Expressions run in order after loading.")
    wait_js: str | None = Field(None, description="Expression polled until truthy after init_js.")
    values: dict[str, str] = Field(
        default_factory=dict, description="name -> JS expression; results become {name} substitutions."
    )
    viewport: tuple[int, int] | None = None


class DesktopSetup(_Strict):
    """A program launched on the episode's display before the agent starts."""

    program: str = Field(description="Shell command; runs in the workspace with DISPLAY set.")
    wait_window: str | None = Field(None, description="Window title (substring) to wait for.")
    wait_seconds: float = Field(10.0, gt=0, le=120)


class Setup(_Strict):
    files: dict[str, Union[str, FileSpec]] = Field(
        default_factory=dict, description="Workspace path -> content, or a FileSpec."
    )
    web: WebSetup | None = None
    browser: BrowserSetup | None = None
    desktop: DesktopSetup | None = None
    commands: list[str] = Field(default_factory=list, description="Shell commands run in the workspace, in order.")
    command_timeout: float = Field(60.0, gt=0, le=3600)

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: dict[str, Any]) -> dict[str, Any]:
        for name in files:
            p = Path(name)
            if p.is_absolute() or ".." in p.parts:
                raise ValueError(f"file {name!r} must be a relative path inside the workspace")
        return files


# ------------------------------------------------------------------------------------------
# reference solution
# ------------------------------------------------------------------------------------------
class ReferenceCall(_Strict):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ReferenceStep(_Strict):
    """One model turn of the reference solution: some text, tool calls, or the final answer."""

    text: str | None = None
    calls: list[ReferenceCall] = Field(default_factory=list)
    answer: str | None = Field(None, description="The final answer (ends the run; no calls allowed).")

    @model_validator(mode="after")
    def _shape(self) -> "ReferenceStep":
        if self.answer is not None and self.calls:
            raise ValueError("a step with an answer cannot also make calls")
        if self.answer is None and not self.calls and not self.text:
            raise ValueError("a step needs calls, text or an answer")
        return self


# ------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------
class _CheckBase(_Strict):
    name: str | None = Field(None, description="Shown in reports; defaults to a description of the check.")


class CommandCheck(_CheckBase):
    """A shell command run in the workspace after the episode."""

    type: Literal["command"]
    run: str
    exit_code: int | None = 0
    output_equals: str | None = Field(None, description="Compared with stripped stdout.")
    output_contains: str | None = None
    output_regex: str | None = None
    timeout: float = Field(30.0, gt=0, le=600)


class FileCheck(_CheckBase):
    """A workspace file's existence and content."""

    type: Literal["file"]
    path: str
    exists: bool = True
    equals: str | None = Field(None, description="Compared after stripping trailing whitespace.")
    contains: str | None = None
    regex: str | None = None


class AnswerCheck(_CheckBase):
    """The agent's final answer: exact (after strip), regex, contains, or a number within tolerance."""

    type: Literal["answer"]
    equals: str | None = None
    contains: str | None = None
    regex: str | None = None
    number: float | None = None
    tolerance: float = Field(0.0, ge=0)
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _some(self) -> "AnswerCheck":
        if all(v is None for v in (self.equals, self.contains, self.regex, self.number)):
            raise ValueError("an answer check needs equals, contains, regex or number")
        return self


class BrowserUrlCheck(_CheckBase):
    """The URL of the episode browser's current page."""

    type: Literal["browser_url"]
    equals: str | None = None
    regex: str | None = None


class BrowserDomCheck(_CheckBase):
    """DOM state of the current page: a JS expression's value, or a selector's text."""

    type: Literal["browser_dom"]
    js: str | None = Field(None, description="Expression evaluated in the page.")
    selector: str | None = None
    equals: Any = Field(None, description="Expected value (js) or text (selector); default: truthy / present.")
    contains: str | None = None
    min: float | None = Field(None, description="The js value must be a number >= min.")
    metric: str | None = Field(None, description="Record the js value as this per-episode metric (e.g. reward).")

    @model_validator(mode="after")
    def _one_of(self) -> "BrowserDomCheck":
        if (self.js is None) == (self.selector is None):
            raise ValueError("give exactly one of js or selector")
        return self


class ExpectedCall(_Strict):
    """One expected call, BFCL style: each argument gives its acceptable value, or a list of
    acceptable values; ``""`` in the list means the argument may be omitted; arguments not listed
    must not appear. (A list is read as alternatives: an argument whose one value is a list is
    written ``[[1, 2]]``.)"""

    name: str
    arguments: dict[str, list[Any]] = Field(
        default_factory=dict, description="Argument -> its value, or a list of acceptable values."
    )

    @field_validator("arguments", mode="before")
    @classmethod
    def _single_values(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class ToolCallsCheck(_CheckBase):
    """The calls the model made (function-calling tasks): order-free for parallel calls; an
    empty ``expected`` list means the model must make no call (irrelevance)."""

    type: Literal["tool_calls"]
    expected: list[ExpectedCall] = Field(default_factory=list)
    ordered: bool = False
    step: int | None = Field(1, description="Which model turn's calls (1-based); null = all turns.")


class BfclCheck(_CheckBase):
    """BFCL: bfcl_eval's own verdict on the model's first turn, as written (before coercion)."""

    type: Literal["bfcl"]
    category: str
    entry: str = Field(description="The BFCL entry id, e.g. simple_python_0.")


class Tau2RewardCheck(_CheckBase):
    """tau2-bench: passes when tau2's own evaluator gives the conversation reward 1."""

    type: Literal["tau2_reward"]


Check = Annotated[
    Union[CommandCheck, FileCheck, AnswerCheck, BrowserUrlCheck, BrowserDomCheck, ToolCallsCheck, Tau2RewardCheck, BfclCheck],
    Field(discriminator="type"),
]


# ------------------------------------------------------------------------------------------
# the task
# ------------------------------------------------------------------------------------------
class Task(_Strict):
    """One evaluation task (one episode per run)."""

    id: str = Field(pattern=TASK_ID_RE)
    category: str = Field("general", description="Reports group success rates by category.")
    instruction: Union[str, Instruction]
    tools: list[str] = Field(default_factory=list, description="Toolset names: shell, files, browser, desktop, ...")
    tool_options: dict[str, Any] = Field(default_factory=dict, description="Options passed to the toolsets.")
    functions: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Schema-only functions (OpenAI format) for function-calling tasks; calls are recorded, not run.",
    )
    system: str | None = Field(None, description="System prompt override.")
    approve_tools: list[str] = Field(
        default_factory=list,
        description='Tools whose "ask" decisions (dangerous-looking arguments, calls after untrusted content) '
        "are approved in this task; every other ask is denied and shown in the report.",
    )
    display: bool | None = Field(None, description="Start a virtual display (default: when desktop tools or setup need one).")
    setup: Setup = Field(default_factory=Setup)
    limits: Limits = Field(default_factory=Limits)
    model: str | None = Field(None, description="Model spec override for this task.")
    reference: list[ReferenceStep] = Field(default_factory=list, description="The reference solution, step by step.")
    checks: list[Check] = Field(default_factory=list)
    teardown: list[str] = Field(default_factory=list, description="Shell commands run after the checks.")
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(None, description="Filled in by the loader: the task file.")

    @field_validator("tools")
    @classmethod
    def _tool_names(cls, tools: list[str]) -> list[str]:
        if len(set(tools)) != len(tools):
            raise ValueError("tool sets are listed twice")
        from ..toolsets import BUILTIN_TOOLSETS

        for name in tools:
            if name not in BUILTIN_TOOLSETS and ":" not in name and not name.endswith(".py"):
                raise ValueError(f"unknown tool set {name!r}: use {', '.join(BUILTIN_TOOLSETS)}, or module:attr / file.py")
        return tools

    @field_validator("functions")
    @classmethod
    def _function_schemas(cls, functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from .function_schemas import check_function_schema

        for i, schema in enumerate(functions):
            check_function_schema(schema, where=f"functions[{i}]")  # ValueError naming the problem
        return functions

    @model_validator(mode="after")
    def _consistent(self) -> "Task":
        if not self.checks:
            raise ValueError("a task needs at least one check")
        if self.setup.browser and "browser" not in self.tools:
            raise ValueError("setup.browser needs 'browser' in tools")
        return self

    # -- derived ------------------------------------------------------------------------------
    @property
    def instruction_text(self) -> str:
        return self.instruction if isinstance(self.instruction, str) else (self.instruction.text or "")

    @property
    def instruction_audio(self) -> str | None:
        return None if isinstance(self.instruction, str) else self.instruction.audio

    @property
    def needs_display(self) -> bool:
        if self.display is not None:
            return self.display
        return "desktop" in self.tools or self.setup.desktop is not None

    @property
    def needs_browser(self) -> bool:
        return "browser" in self.tools

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()


def task_json_schema() -> dict[str, Any]:
    """The published JSON Schema of a task file (``tasks/schema.json``)."""
    schema = Task.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/omni-agent/omni-agent/tasks/schema.json"
    schema["title"] = "omni-agent evaluation task"
    schema.get("properties", {}).pop("source", None)
    return schema


def schema_text() -> str:
    return json.dumps(task_json_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(value: Any, values: dict[str, Any]) -> Any:
    """Replace ``{name}`` for known names in strings (recursively in lists and dicts)."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), value)
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, values) for v in value)
    if isinstance(value, dict):
        return {k: substitute(v, values) for k, v in value.items()}
    return value
