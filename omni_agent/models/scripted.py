"""A scripted policy: replays given outputs in order, for tests and scripted tasks.

Each output is raw model text (``<tool_call>`` blocks and all), a full :class:`ModelResponse`
(e.g. with native ``tool_calls``), or a function of the request that returns either. Text is
streamed in small chunks so the agent's streaming parser runs exactly as with a real model.
Its results are never model results: ``info.backend == "scripted"`` and the label says so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Union

from ..exceptions import ModelError, UserError
from ..wording import article
from .base import Model, ModelChunk, ModelInfo, ModelRequest, ModelResponse

__all__ = ["ScriptedModel", "ScriptedOutput"]

ScriptedOutput = Union[str, ModelResponse, Callable[[ModelRequest], Union[str, ModelResponse]]]


class ScriptedModel(Model):
    """Replays ``outputs`` one per request; raises :class:`ModelError` when they run out.

    ``requests`` holds every request seen, so tests can check what the agent sent.
    """

    def __init__(self, outputs: Sequence[ScriptedOutput], *, name: str = "scripted", chunk_size: int = 7) -> None:
        for i, out in enumerate(outputs):
            if not (isinstance(out, (str, ModelResponse)) or callable(out)):
                raise UserError(f"scripted output {i} is {article(type(out).__name__)}; expected text, a ModelResponse or a function")
        if chunk_size < 1:
            raise UserError("chunk_size must be >= 1")
        self.outputs: list[ScriptedOutput] = list(outputs)
        self.requests: list[ModelRequest] = []
        self.chunk_size = chunk_size
        self.info = ModelInfo(name=name, backend="scripted", can_see=True, can_hear=True)

    @classmethod
    def from_file(cls, path: str | Path, *, name: str | None = None) -> ScriptedModel:
        """Load a YAML or JSON list of outputs: strings (raw text) or objects (ModelResponse fields)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read scripted outputs {p}: {exc.strerror or exc}") from exc
        try:
            if p.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:  # json / yaml syntax errors: one clear line for the user
            raise UserError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {exc}") from exc
        if not isinstance(data, list):
            raise UserError(f"{p}: expected a list of outputs, got {type(data).__name__}")
        outputs: list[ScriptedOutput] = []
        for i, item in enumerate(data):
            if isinstance(item, str):
                outputs.append(item)
            elif isinstance(item, dict):
                try:
                    outputs.append(ModelResponse.model_validate(item))
                except Exception as exc:
                    raise UserError(f"{p}: output {i} is not a valid response: {exc}") from exc
            else:
                raise UserError(f"{p}: output {i} is {article(type(item).__name__)}; expected text or an object")
        return cls(outputs, name=name or p.stem)

    @property
    def remaining(self) -> int:
        return len(self.outputs) - len(self.requests)

    def _next(self, request: ModelRequest) -> ModelResponse:
        index = len(self.requests)
        self.requests.append(request)
        if index >= len(self.outputs):
            raise ModelError(
                f"scripted model {self.info.name!r} ran out of outputs: request {index + 1} "
                f"but only {len(self.outputs)} scripted"
            )
        out: Any = self.outputs[index]
        if callable(out) and not isinstance(out, (str, ModelResponse)):
            try:
                out = out(request)
            except Exception as exc:
                raise ModelError(f"scripted output {index} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(out, str):
            return ModelResponse(text=out, finish_reason="stop", model=self.info.label)
        if isinstance(out, ModelResponse):
            return out.model_copy(update={"model": out.model or self.info.label})
        raise ModelError(f"scripted output {index} produced {type(out).__name__}; expected text or a ModelResponse")

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return self._next(request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        response = self._next(request)
        text = response.text
        for start in range(0, len(text), self.chunk_size):
            yield ModelChunk(text=text[start : start + self.chunk_size])
            await asyncio.sleep(0)  # let consumers see each chunk, as with a real stream
        yield ModelChunk(text="", response=response)
