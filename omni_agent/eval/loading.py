"""Load task files and suites; bad files get errors naming the file, the line and the field.

PyYAML's composer keeps a start mark (line, column) on every node, so the loader walks the
node tree once to map each field path (``("checks", 2, "regex")``) to its line, then turns
pydantic's error locations into ``file:line: field: message``. A suite is a directory of task
files, one task file, or a Python factory (``path/to/suite.py:tasks`` / ``package.module:fn``)
returning tasks (MiniWoB++ and BFCL suites are generated that way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from ..exceptions import UserError
from ..importing import import_target
from .task import Task

__all__ = ["TaskFileError", "check_task_tools", "load_suite", "load_task", "load_task_text", "resolve_suite"]

TASK_SUFFIXES = (".yaml", ".yml")

SUITE_ALIASES = {
    "smoke": "tasks/smoke",
    "voice": "tasks/voice",
    "miniwob": "evals/miniwob/suite.py:tasks",
    "bfcl": "evals/bfcl/suite.py:tasks",
}
"""Short names for the suites shipped in the repository (resolved from the repo root)."""


class TaskFileError(UserError):
    """A task file that cannot be used; ``problems`` lists ``(line, field, message)``."""

    def __init__(self, path: str, problems: list[tuple[int | None, str, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}:{line if line else '?'}: {field or '(task)'}: {message}" for line, field, message in problems]
        super().__init__("invalid task file\n" + "\n".join(lines))


def _line_map(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map each field path to the 1-based line where its value (or key) starts."""
    lines: dict[tuple[Any, ...], int] = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            sub = _line_map(value_node, path + (key,))
            sub[path + (key,)] = key_node.start_mark.line + 1
            lines.update(sub)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_map(item, path + (i,)))
    return lines


def _locate(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> tuple[int | None, str]:
    """The line and dotted field name for a pydantic error location. Parts that are not in the
    document (union tags such as ``command``) are skipped, except a last one: a missing field."""
    doc_path: tuple[Any, ...] = ()
    names: list[Any] = []
    for i, part in enumerate(loc):
        if doc_path + (part,) in lines:
            doc_path += (part,)
            names.append(part)
        elif i == len(loc) - 1:
            names.append(part)
    field = ""
    for part in names:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    return lines.get(doc_path), field


def load_task_text(text: str, *, source: str = "<string>") -> Task:
    """Parse and validate one task from YAML text."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        message = f"not valid YAML: {getattr(exc, 'problem', None) or exc}"
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            # e.g. an unclosed quote is found only at the end of the file: say where it began
            message += f" ({context} that starts on line {context_mark.line + 1})"
        raise TaskFileError(source, [(line, "", message)]) from exc
    if not isinstance(data, dict) or node is None:
        raise TaskFileError(source, [(1, "", "a task file must be a YAML mapping (id: ..., instruction: ...)")])
    bad_keys = _non_string_keys(node)
    if bad_keys:
        raise TaskFileError(source, bad_keys)
    lines = _line_map(node)
    data["source"] = source
    try:
        task = Task.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            line, field = _locate(tuple(err["loc"]), lines)
            problems.append((line, field, err["msg"].removeprefix("Value error, ")))
        raise TaskFileError(source, problems) from None
    missing = [(lines.get(path), _dotted(path), message) for path, message in _missing_files(task)]
    if missing:
        raise TaskFileError(source, missing)
    return _with_resolved_tool_paths(task)


_YAML_STR = "tag:yaml.org,2002:str"


def _non_string_keys(node: yaml.Node, path: tuple[Any, ...] = ()) -> list[tuple[int | None, str, str]]:
    """Keys YAML reads as something other than text: ``on:`` / ``yes:`` become booleans, ``1:`` a
    number. A schema property named ``on`` would reach the model as "true" while ``required``
    still says "on", so such keys are refused with the fix named."""
    problems: list[tuple[int | None, str, str]] = []
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _YAML_STR:
                kind = key_node.tag.rsplit(":", 1)[-1]
                value = yaml.safe_load(key_node.value) if kind != "null" else None
                problems.append((
                    key_node.start_mark.line + 1,
                    _dotted(path + (key_node.value,)),
                    f"YAML reads the key {key_node.value} as the {kind} {value!r}, not as the name "
                    f"{key_node.value!r}: quote it ('{key_node.value}': ...)",
                ))  # fmt: skip
            problems += _non_string_keys(value_node, path + (key_node.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _non_string_keys(item, path + (i,))
    return problems


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _missing_files(task: Task) -> list[tuple[tuple[Any, ...], str]]:
    """Files a task names relative to itself (audio, setup sources, web.dir, tool modules) that
    are not there: a task-file mistake, reported when the task loads rather than as a setup
    failure that would be retried."""
    if task.source is None:
        return []
    base = task.base_dir
    found: list[tuple[tuple[Any, ...], str]] = []
    audio = task.instruction_audio
    if audio and not (base / audio).is_file():
        found.append((("instruction", "audio"), f"audio file not found: {base / audio}"))
    for name, spec in task.setup.files.items():
        source = getattr(spec, "source", None)
        if source and not (base / source).is_file():
            found.append((("setup", "files", name, "source"), f"source file not found: {base / source}"))
    web = task.setup.web
    if web is not None and web.dir and not (base / web.dir).is_dir():
        found.append((("setup", "web", "dir"), f"web.dir not found: {base / web.dir}"))
    for i, name in enumerate(task.tools):
        file = _tool_file(name)
        if file is not None and not Path(file).is_absolute() and not (base / file).is_file():
            found.append((("tools", i), f"tool module not found: {base / file} (paths are relative to the task file)"))
    return found


def _tool_file(name: str) -> str | None:
    """The file part of a ``file.py`` / ``file.py:attr`` tool set, else None (built-in, dotted,
    or an ``mcp:`` server, whose command line is run as written)."""
    if name.startswith("mcp:"):
        return None
    file = name.rpartition(":")[0] if ".py:" in name else name
    return file if file.endswith(".py") else None


def _with_resolved_tool_paths(task: Task) -> Task:
    """``tools: [my_tools.py]`` means the file beside the task, wherever the command runs."""
    if task.source is None:
        return task
    resolved = []
    for name in task.tools:
        file = _tool_file(name)
        if file is not None and not Path(file).is_absolute():
            name = str((task.base_dir / file).resolve()) + name[len(file) :]
        resolved.append(name)
    return task.model_copy(update={"tools": resolved})


def load_task(path: str | Path) -> Task:
    """Load one task file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read task file {p}: {exc.strerror or exc}") from exc
    return load_task_text(text, source=str(p))


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def resolve_suite(spec: str) -> str:
    """Turn a suite alias into a path or factory spec; other specs pass through."""
    if spec in SUITE_ALIASES and not Path(spec).exists():
        target = SUITE_ALIASES[spec]
        path, _, attr = target.partition(":")
        return str(_repo_root() / path) + (f":{attr}" if attr else "")
    return spec


def _load_factory(spec: str, options: dict[str, Any]) -> list[Task]:
    target, _, attr = spec.rpartition(":")
    module = import_target(target, what="suite module")
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"{target} has no suite factory {attr!r}")
    tasks = list(factory(**options))
    if not all(isinstance(t, Task) for t in tasks):
        raise UserError(f"{spec} must return Task objects")
    return tasks


def load_suite(spec: str | Path, *, options: dict[str, Any] | None = None) -> list[Task]:
    """All tasks of a suite, sorted by id; duplicate ids are an error.

    ``spec``: a directory (task files found recursively), one task file, ``file.py:factory`` or
    ``module:factory``, or an alias (``smoke``, ``miniwob``, ``bfcl``). ``options`` go to factories.
    """
    resolved = resolve_suite(str(spec))
    path = Path(resolved)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in TASK_SUFFIXES and not p.name.startswith("_"))
        if not files:
            raise UserError(f"no task files (*.yaml) in {path}")
        errors: list[str] = []
        tasks = []
        for f in files:
            try:
                tasks.append(load_task(f))
            except TaskFileError as exc:
                errors.append(exc.message)
        if errors:
            raise UserError("\n".join(errors))
    elif path.is_file():
        tasks = [load_task(path)]
    elif ":" in resolved and not resolved.endswith(TASK_SUFFIXES):
        tasks = _load_factory(resolved, dict(options or {}))
    else:
        raise UserError(f"suite not found: {spec} (a directory of task files, a task file, or file.py:factory)")
    _check_unique(tasks)
    return sorted(tasks, key=lambda t: t.id)


def _check_unique(tasks: Iterable[Task]) -> None:
    seen: dict[str, str | None] = {}
    for t in tasks:
        if t.id in seen:
            raise UserError(f"duplicate task id {t.id!r} in {seen[t.id]} and {t.source}")
        seen[t.id] = t.source


def check_task_tools(tasks: Iterable[Task]) -> None:
    """Load every task's tool sets (nothing is launched) so a tool module that does not import,
    names no tools or builds an invalid JSON Schema is a validate-time error naming the task."""
    import tempfile

    from pydantic import ValidationError as OptionsError

    from ..toolsets import load_toolsets

    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="omni-validate-") as ws:
        for task in tasks:
            try:
                load_toolsets(task.tools, workspace=ws, options=dict(task.tool_options))
            except (UserError, OptionsError) as exc:
                message = exc.message if isinstance(exc, UserError) else str(exc).splitlines()[-1].strip()
                errors.append(f"{task.source or task.id}: tools: {message}")
    if errors:
        raise UserError("invalid task file\n" + "\n".join(errors))
