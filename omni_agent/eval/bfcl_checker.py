"""BFCL's own scoring, from the installed ``bfcl_eval`` package: its AST checker and its
relevance / irrelevance rule, applied to the calls exactly as the model wrote them.

Why a bridge: ``bfcl_eval.eval_checker.ast_eval.ast_checker`` imports
``bfcl_eval.constants.model_config`` for one lookup (does this model's handler turn ``.`` in
function names into ``_``?), and that module imports every model handler with its SDK. When it
is not importable (``pip install --no-deps bfcl-eval``), a stand-in module holding only our
entry takes its place; every other line of the checker is BFCL's.

"As written" means before the validator's coercions ("10" -> 10, "true" -> true, JSON in a
string -> object), and only what BFCL's decoders read: a block our lenient parser had to repair
(single quotes, arguments as a JSON string, ``"parameters"`` for ``"arguments"``, a missing
``</tool_call>``...) is dropped, as BFCL's Qwen handler drops JSON it cannot load.
"""

from __future__ import annotations

import copy
import json
import sys
import types
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..exceptions import MissingDependencyError
from ..parsing.qwen import QwenScanner, thinking_opened_by_template

__all__ = [
    "BFCL_MODEL_NAME",
    "Decoded",
    "OfficialVerdict",
    "bfcl_check",
    "decode_native",
    "decode_text",
    "language_for",
    "prompt_functions",
]

BFCL_MODEL_NAME = "omni-agent"
"""The model name handed to BFCL's checker: function names are compared as given (no ``.`` ->
``_`` rewrite), as for BFCL's Qwen handlers."""
NO_CALL_CATEGORIES = frozenset({"irrelevance", "live_irrelevance"})
ANY_CALL_CATEGORIES = frozenset({"live_relevance"})


@dataclass(frozen=True)
class _Config:
    underscore_to_dot: bool = False


@cache
def _bfcl() -> types.SimpleNamespace:
    """BFCL's checker functions, imported once (the model-config stand-in first if needed)."""
    try:
        import bfcl_eval  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("bfcl-eval", "eval") from exc
    name = "bfcl_eval.constants.model_config"
    if name not in sys.modules:
        try:
            __import__(name)
        except ImportError:  # the handlers' SDKs are not installed: stand in for the mapping
            stub = types.ModuleType(name)
            stub.MODEL_CONFIG_MAPPING = {}  # type: ignore[attr-defined]
            sys.modules[name] = stub
    sys.modules[name].MODEL_CONFIG_MAPPING.setdefault(BFCL_MODEL_NAME, _Config())
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    from bfcl_eval.utils import _func_doc_language_specific_pre_processing, is_empty_output

    return types.SimpleNamespace(
        ast_checker=ast_checker, Language=Language, is_empty_output=is_empty_output,
        preprocess=_func_doc_language_specific_pre_processing,
    )  # fmt: skip


def language_for(category: str) -> Any:
    """BFCL's ``Language`` for a category (Java and JavaScript values arrive as strings)."""
    lang = _bfcl().Language
    if category.endswith("java"):
        return lang.JAVA
    if category.endswith("javascript"):
        return lang.JAVASCRIPT
    return lang.PYTHON


def prompt_functions(functions: list[dict[str, Any]], category: str) -> list[dict[str, Any]]:
    """The functions as BFCL shows them to a model: its language hint on each description and,
    for Java / JavaScript, every parameter as a string holding the value's source."""
    return list(_bfcl().preprocess(copy.deepcopy(functions), category))


@dataclass
class Decoded:
    """What BFCL's checker gets: ``[{name: arguments}]``, plus the blocks left out and why."""

    calls: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def decode_text(text: str) -> Decoded:
    """Calls after ``</think>`` in Qwen ``<tool_call>`` text, as written. The project's scanner
    finds the blocks; a block it had to repair, or could not read, is left out (noted)."""
    scanner = QwenScanner(starts_in_thinking=thinking_opened_by_template(text))
    out = Decoded()
    repaired: list[str] = []
    for item in scanner.feed(text) + scanner.close():
        if item[0] == "problem":
            problem = item[1]
            if problem.kind in ("repaired_json", "unclosed_block"):
                repaired.append(problem.message)  # a note that precedes the call it concerns
            elif problem.fatal:
                out.dropped.append(problem.message)
        elif item[0] == "call":
            call = item[1]
            if repaired:
                out.dropped.append(f"{call.name}: not as written ({'; '.join(repaired)})")
            else:
                out.calls.append({call.name: dict(call.arguments)})
            repaired = []
        elif item[2].strip():
            repaired = []
    return out


def decode_native(tool_calls: list[Any]) -> Decoded:
    """OpenAI ``tool_calls`` (a server's own parser) as BFCL's function-calling handlers read
    them: ``json.loads`` of each ``arguments`` string, which must hold an object."""
    out = Decoded()
    for item in tool_calls:
        fn = item.get("function") if isinstance(item, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        raw = fn.get("arguments") if isinstance(fn, dict) else None
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            out.dropped.append(f"{name}: arguments are not JSON ({exc})")
            continue
        if not isinstance(name, str) or not isinstance(args, dict):
            out.dropped.append(f"{name}: not a call with an arguments object")
            continue
        out.calls.append({name: args})
    return out


@dataclass(frozen=True)
class OfficialVerdict:
    valid: bool
    error_type: str = ""
    """BFCL's own error type (``simple_function_checker:wrong_count``, ``type_error:simple``,
    ``irrelevance_error:decoder_success``...)."""
    error: str = ""


def bfcl_check(
    category: str, functions: list[dict[str, Any]], decoded: Decoded,
    possible_answer: list[dict[str, Any]] | None,
) -> OfficialVerdict:  # fmt: skip
    """BFCL's verdict: its relevance rule (a call is a non-empty decoded output) for the
    (ir)relevance categories, its AST checker on the raw functions for the rest."""
    bfcl = _bfcl()
    if category in NO_CALL_CATEGORIES or category in ANY_CALL_CATEGORIES:
        has_call = not bfcl.is_empty_output(decoded.calls)
        if category in NO_CALL_CATEGORIES:
            if has_call:
                return OfficialVerdict(False, "irrelevance_error:decoder_success", f"calls made: {_names(decoded)}")
            return OfficialVerdict(True)
        if not has_call:
            return OfficialVerdict(False, "relevance_error:decoder_failed", "no call decoded")
        return OfficialVerdict(True)
    if possible_answer is None:
        raise ValueError(f"category {category!r} needs BFCL's possible answer")
    result = bfcl.ast_checker(
        copy.deepcopy(functions), copy.deepcopy(decoded.calls), possible_answer,
        language_for(category), category, BFCL_MODEL_NAME,
    )  # fmt: skip
    if result["valid"]:
        return OfficialVerdict(True)
    errors = result.get("error") or []
    return OfficialVerdict(False, str(result.get("error_type", "")), "; ".join(str(e) for e in errors)[:500])


def _names(decoded: Decoded) -> list[str]:
    return [name for call in decoded.calls for name in call]
