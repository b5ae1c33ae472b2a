"""Run trajectories: a directory per run that survives the process being killed at any moment.

Layout::

    <run dir>/
      meta.json     run id, model label, tools with schemas, instruction, start time; rewritten
                    (atomically: temp file + fsync + rename) at the end with stop reason and answer
      steps.jsonl   one JSON line per step, appended with flush + fsync
      media/        screenshots and audio, content-addressed (never base64 in the JSON)

A step is written twice: once when its calls are decided (``complete: false``: if the process
dies inside a tool, the trajectory still says which calls were running) and once when it ended;
the reader keeps the last record of each step. A torn last line (killed mid-write) is skipped
with a warning, so a killed run always loads.
"""

from __future__ import annotations

import os
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .exceptions import TrajectoryError
from .messages import ContentPart, MediaStore, Message, ToolCall, ToolMessage, ToolResult
from .models.base import Usage
from .parsing.types import ParseProblem

__all__ = [
    "DecisionRecord",
    "RunMeta",
    "RunRecorder",
    "StepRecord",
    "Trajectory",
    "TrajectoryWriter",
    "ValidationRecord",
    "load_trajectory",
    "new_run_id",
]

FORMAT_VERSION = 1


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RunMeta(BaseModel):
    """meta.json: who ran what, and (once finished) how it ended."""

    model_config = ConfigDict(extra="allow")
    format: int = FORMAT_VERSION
    run_id: str
    model: str
    """The model label (scripted runs say "scripted policy, not a model")."""
    model_name: str = ""
    backend: str = ""
    scripted: bool = False
    instruction: str = ""
    system_prompt: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)
    started_at: str = Field(default_factory=utc_now)
    status: Literal["running", "finished"] = "running"
    finished_at: str | None = None
    stop_reason: str | None = None
    answer: str | None = None
    answer_audio: str | None = None
    """Relative path of the spoken answer, when the model spoke."""
    error: str | None = None
    steps: int = 0
    seconds: float | None = None
    usage: Usage = Field(default_factory=Usage)


class ValidationRecord(BaseModel):
    call_id: str
    name: str
    ok: bool
    message: str = ""
    issues: list[dict[str, Any]] = Field(default_factory=list)
    arguments: dict[str, Any] = Field(default_factory=dict)
    """The arguments after the validator's coercions (what the tool got)."""


class DecisionRecord(BaseModel):
    call_id: str
    name: str
    action: Literal["allow", "ask", "deny"]
    reason: str = ""
    approved: bool | None = None


class StepRecord(BaseModel):
    """One line of steps.jsonl."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    step: int
    complete: bool = True
    """False for the record written before the tools ran (the run may have died in them)."""
    new_messages: list[Message] = Field(default_factory=list)
    """Messages added since the previous request (media as files under media/)."""
    prompt_hash: str = ""
    """Hash of the whole prompt as sent (after image eviction); equal hashes = equal prompts."""
    evicted_images: int = 0
    raw_text: str = ""
    visible_text: str = ""
    thinking: str | None = None
    calls: list[ToolCall] = Field(default_factory=list)
    parse_problems: list[ParseProblem] = Field(default_factory=list)
    validations: list[ValidationRecord] = Field(default_factory=list)
    decisions: list[DecisionRecord] = Field(default_factory=list)
    results: list[ToolResult] = Field(default_factory=list)
    executed: list[str] = Field(default_factory=list)
    """Ids of the calls that actually ran (valid and allowed)."""
    observation: list[ContentPart] = Field(default_factory=list)
    """What the observers saw after this step's tools ran."""
    timings: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    outcome: str = ""
    """How the step ended: "answer", "tools", "finish", "model_error", ... ("running" if not complete)."""
    error: str | None = None


class Trajectory(BaseModel):
    """A loaded run directory."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    dir: Path
    meta: RunMeta
    steps: list[StepRecord]
    warnings: list[str] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.meta.status == "finished"

    def media_path(self, relative: str) -> Path:
        return self.dir / relative


class TrajectoryWriter:
    """Writes one run directory incrementally; every write is durable when the call returns."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(run_dir)
        if (self.dir / "steps.jsonl").exists():
            raise TrajectoryError(f"{self.dir} already holds a trajectory; pick a new directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.media = MediaStore(self.dir)
        self._persisted: dict[int, tuple[Any, Any]] = {}
        self._steps_path = self.dir / "steps.jsonl"
        self._fd: int | None = os.open(self._steps_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @classmethod
    def create(cls, parent: str | os.PathLike[str], run_id: str) -> TrajectoryWriter:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return cls(Path(parent) / f"{stamp}-{run_id}")

    # -- media ----------------------------------------------------------------------------------
    def persist_part(self, part: Any) -> Any:
        """The part with its media saved under media/ (each in-memory part is encoded once)."""
        hit = self._persisted.get(id(part))
        if hit is not None and hit[0] is part:
            return hit[1]
        stored = self.media.persist(part)
        if stored is not part:
            self._persisted[id(part)] = (part, stored)
        return stored

    def persist_parts(self, parts: list[Any]) -> list[Any]:
        return [self.persist_part(p) for p in parts]

    def persist_messages(self, messages: list[Any]) -> list[Any]:
        out = []
        for m in messages:
            if isinstance(m, ToolMessage):
                out.append(ToolMessage(result=self.persist_result(m.result)))
            else:
                out.append(m.model_copy(update={"content": self.persist_parts(list(m.content))}))
        return out

    def persist_result(self, result: ToolResult) -> ToolResult:
        return result.model_copy(update={"content": self.persist_parts(list(result.content))})

    # -- records --------------------------------------------------------------------------------
    def write_meta(self, meta: RunMeta) -> None:
        """Replace meta.json atomically (a reader sees the old or the new file, never a mix)."""
        data = meta.model_dump_json(indent=2).encode()
        target = self.dir / "meta.json"
        tmp = self.dir / f".meta.json.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(self.dir)

    def append_step(self, record: StepRecord) -> None:
        """Append one step as a single JSON line, then fsync."""
        if self._fd is None:
            raise TrajectoryError(f"trajectory writer for {self.dir} is closed")
        line = (record.model_dump_json() + "\n").encode()
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunRecorder:
    """What the agent loop uses: a writer plus meta, whose I/O failures never stop a run.

    The first failure (disk full, directory removed) closes the recorder and is returned once as
    a message, so the loop can report it and carry on without a trajectory.
    """

    def __init__(self, writer: TrajectoryWriter, meta: RunMeta) -> None:
        self.writer: TrajectoryWriter | None = writer
        self.dir = writer.dir
        self.meta = meta
        self.failure: str | None = None

    @classmethod
    def start(cls, parent: str | os.PathLike[str], meta: RunMeta) -> RunRecorder:
        """Create the run directory and write the first meta.json (errors here do raise)."""
        try:
            writer = TrajectoryWriter.create(parent, meta.run_id)
            writer.write_meta(meta)
        except OSError as exc:
            raise TrajectoryError(f"cannot write a trajectory under {parent}: {exc.strerror or exc}") from exc
        return cls(writer, meta)

    def step(self, record: StepRecord) -> str | None:
        """Persist the record's media, then append it; returns an error message on the first failure."""

        def write(w: TrajectoryWriter) -> None:
            stored = record.model_copy(
                update={
                    "new_messages": w.persist_messages(list(record.new_messages)),
                    "results": [w.persist_result(r) for r in record.results],
                    "observation": w.persist_parts(list(record.observation)),
                }
            )
            w.append_step(stored)

        return self._guard(write)

    def finish(self, *, audio: Any = None, **updates: Any) -> str | None:
        """Rewrite meta.json as finished (``status`` may be overridden, e.g. for a crash)."""

        def write(w: TrajectoryWriter) -> None:
            fields: dict[str, Any] = {"status": "finished", "finished_at": utc_now(), **updates}
            if audio is not None:
                fields["answer_audio"] = w.persist_parts([audio])[0].path
            self.meta = self.meta.model_copy(update=fields)
            w.write_meta(self.meta)
            w.close()

        return self._guard(write)

    def _guard(self, fn: Any) -> str | None:
        if self.writer is None:
            return None
        try:
            fn(self.writer)
        except OSError as exc:
            self.writer.close()
            self.writer = None
            self.failure = f"trajectory writing stopped ({self.dir}): {exc}"
            return self.failure
        return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_trajectory(run_dir: str | os.PathLike[str]) -> Trajectory:
    """Read a run directory, finished or not. Torn or corrupt lines are skipped with a warning."""
    d = Path(run_dir)
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise TrajectoryError(f"{d} is not a trajectory: no meta.json")
    try:
        meta = RunMeta.model_validate_json(meta_path.read_bytes())
    except Exception as exc:
        raise TrajectoryError(f"{meta_path}: unreadable ({exc})") from exc
    notes: list[str] = []
    by_step: dict[int, StepRecord] = {}
    steps_path = d / "steps.jsonl"
    raw = steps_path.read_bytes() if steps_path.is_file() else b""
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_last = number == len(lines) or all(not rest.strip() for rest in lines[number:])
        try:
            record = StepRecord.model_validate_json(line)
        except Exception as exc:
            torn = is_last and not raw.endswith(b"\n")
            what = "torn last line (the run was killed while writing it)" if torn else f"corrupt line ({exc.__class__.__name__})"
            notes.append(f"{steps_path.name}:{number}: skipped {what}")
            continue
        by_step[record.step] = record
    for note in notes:
        warnings.warn(f"{d}: {note}", stacklevel=2)
    if meta.status == "running":
        notes.append("the run did not finish (killed or still running)")
    return Trajectory(dir=d, meta=meta, steps=[by_step[k] for k in sorted(by_step)], warnings=notes)
