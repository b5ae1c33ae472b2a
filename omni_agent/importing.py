"""Import user code named on the command line or in task files: ``package.module`` or ``file.py``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from .exceptions import UserError

__all__ = ["import_target"]


def import_target(target: str, *, what: str) -> ModuleType:
    """Import a dotted module name or a ``.py`` file; ``what`` names it in errors ("tool file")."""
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UserError(f"{what} not found: {path}")
        name = f"omni_agent_user_{abs(hash(str(path.resolve())))}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UserError(f"cannot load {what} {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(name, None)
            raise
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise UserError(f"cannot import {what} {target!r}: {exc}") from exc
