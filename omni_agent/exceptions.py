"""The one exception tree of omni-agent.

    OmniAgentError                  base of everything raised on purpose
    ├── UserError                   developer misuse, raised at definition time (bad tool, bad config)
    │   └── ToolDefinitionError     a function or schema that cannot become a tool
    ├── ModelError                  a model backend failed (not the model's *output*: that is data)
    │   ├── ModelUnavailableError   server down, checkpoint missing, optional dependency absent
    │   └── ModelResponseError      the backend answered with something unusable (malformed JSON)
    ├── ToolExecutionError          raised *by tools* to report a failure the model should see
    ├── TrajectoryError             a trajectory directory cannot be read
    ├── DisplayError                no usable X display (none set, Xvfb missing, server died)
    └── MissingDependencyError      an optional extra is not installed (says which)

Model mistakes (bad JSON, unknown tool, schema errors) are never exceptions: the parser and the
validator return them as data so the loop can show them to the model.
"""

from __future__ import annotations


class OmniAgentError(Exception):
    """Base class; holds its message in ``.message`` as well as ``args``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(OmniAgentError):
    """The developer used the API wrongly; fix the code, not the model."""


class ToolDefinitionError(UserError):
    """A function or schema could not be turned into a tool."""


class ModelError(OmniAgentError):
    """A model backend failed to produce an answer."""


class ModelUnavailableError(ModelError):
    """The model cannot be reached or loaded (server down, no checkpoint, missing extra)."""


class ModelResponseError(ModelError):
    """The backend answered, but the answer cannot be used (malformed JSON, wrong shape)."""


class ToolExecutionError(OmniAgentError):
    """Raised inside a tool to return a clean error message to the model (no traceback)."""


class TrajectoryError(OmniAgentError):
    """A trajectory directory is missing or unreadable."""


class DisplayError(OmniAgentError):
    """No usable X display: none configured, Xvfb missing, or it would not start / answer."""


class MissingDependencyError(OmniAgentError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'omni-agent[{extra}]'")
        self.package = package
        self.extra = extra


def require(module: str, extra: str, package: str | None = None):  # noqa: ANN201 - returns a module
    """Import an optional module or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(package or module, extra) from exc
