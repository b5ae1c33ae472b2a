"""What is worth saying while an agent works: a policy subscribed to the agent's events.

Said: the task started; a step's outcome in a few words ("Done: open page." / "click failed.");
a question for the user (an approval, through :meth:`ProgressPolicy.approver`, or an
``ask_user``-style tool's question); the final answer (or why the run stopped). Step outcomes are rate-limited
(``min_interval_s``) and dropped rather than queued when too frequent, so speech never falls
behind the work; questions and answers are always said, and the answer interrupts stale progress.
Phrases come in the user's language where it is known (given, or guessed from the script of the
instruction: CJK, kana, hangul, Cyrillic) and in English otherwise.
"""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import events as ev
from ..messages import ToolCall
from ..policy import Approval, Approver

__all__ = ["PHRASES", "ProgressPolicy", "SpokenItem", "detect_language", "spoken_text"]

PHRASES: dict[str, dict[str, str]] = {
    "en": {"started": "On it.", "done": "Done: {tools}.", "failed": "{tools} failed.",
           "approval": "I need your permission to run {tool}. {reason}", "stopped": "I had to stop: {reason}.",
           "no_answer": "Finished.", "code": "(code omitted)", "sep": ", "},
    "zh": {"started": "好的，马上开始。", "done": "完成：{tools}。", "failed": "{tools} 失败了。",
           "approval": "运行 {tool} 需要你的许可。{reason}", "stopped": "我不得不停止：{reason}。",
           "no_answer": "完成了。", "code": "（代码略）", "sep": "、"},
    "de": {"started": "Mache ich.", "done": "Erledigt: {tools}.", "failed": "{tools} ist fehlgeschlagen.",
           "approval": "Darf ich {tool} ausführen? {reason}", "stopped": "Ich musste aufhören: {reason}.",
           "no_answer": "Fertig.", "code": "(Code ausgelassen)", "sep": ", "},
    "fr": {"started": "Je m'en occupe.", "done": "Fait : {tools}.", "failed": "{tools} a échoué.",
           "approval": "J'ai besoin de votre accord pour lancer {tool}. {reason}",
           "stopped": "J'ai dû m'arrêter : {reason}.", "no_answer": "Terminé.", "code": "(code omis)", "sep": ", "},
    "es": {"started": "Me pongo con ello.", "done": "Hecho: {tools}.", "failed": "{tools} falló.",
           "approval": "Necesito tu permiso para ejecutar {tool}. {reason}",
           "stopped": "Tuve que parar: {reason}.", "no_answer": "Terminado.", "code": "(código omitido)", "sep": ", "},
    "ja": {"started": "了解しました。", "done": "完了：{tools}。", "failed": "{tools} に失敗しました。",
           "approval": "{tool} の実行には許可が必要です。{reason}", "stopped": "中断しました：{reason}。",
           "no_answer": "完了しました。", "code": "（コード省略）", "sep": "、"},
    "ru": {"started": "Приступаю.", "done": "Готово: {tools}.", "failed": "{tools}: ошибка.",
           "approval": "Нужно ваше разрешение, чтобы запустить {tool}. {reason}",
           "stopped": "Пришлось остановиться: {reason}.", "no_answer": "Готово.", "code": "(код опущен)", "sep": ", "},
}  # fmt: skip
"""Phrase templates per language (add a language by adding a row with the same keys)."""

_ASK_TOOL = re.compile(r"^(ask|ask_user|ask_human|ask_question|question|clarify|request_input)$", re.I)
_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.S)
_MARKUP = re.compile(r"[*_`#>|]+")
_URL = re.compile(r"https?://\S+")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def detect_language(text: str | None) -> str | None:
    """A guess from the writing system alone (None for Latin script: the language stays unknown)."""
    if not text:
        return None
    counts = {"ja": 0, "zh": 0, "ko": 0, "ru": 0}
    for ch in text:
        code = ord(ch)
        if 0x3040 <= code <= 0x30FF:
            counts["ja"] += 1
        elif 0x4E00 <= code <= 0x9FFF:
            counts["zh"] += 1
        elif 0xAC00 <= code <= 0xD7AF:
            counts["ko"] += 1
        elif 0x0400 <= code <= 0x04FF:
            counts["ru"] += 1
    if counts["ja"]:
        return "ja"  # Japanese mixes kana with kanji; kana alone decides
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] >= 2 else None


def spoken_text(text: str, *, max_chars: int = 300, code_phrase: str = "(code omitted)") -> str:
    """Text fit to be read aloud: no code blocks, markup or URLs; at most ~``max_chars``, cut at a sentence."""
    text = _CODE_BLOCK.sub(f" {code_phrase} ", text)
    text = _URL.sub("", text)
    text = _MARKUP.sub(" ", text)
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    out = ""
    for sentence in _SENTENCE_END.split(text):
        if out and len(out) + len(sentence) + 1 > max_chars:
            break
        out = f"{out} {sentence}".strip() if out else sentence
    return out if out and len(out) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + "…"


def _human_name(tool_name: str) -> str:
    return tool_name.replace("_", " ").replace(".", " ").strip()


@dataclass(frozen=True)
class SpokenItem:
    """One decision of the policy: what to say and why."""

    kind: str
    text: str
    interrupt: bool = False


class ProgressPolicy:
    """Subscribe to an agent's events (``attach``) and decide what to say.

    Args:
        say: where decisions go, usually ``speaker.say`` (called with ``text, kind=, interrupt=``).
        language: the user's language ("en", "zh", ...); None guesses from the instruction.
        min_interval_s: least time between two progress utterances (step outcomes).
        speak_steps: say step outcomes at all (False: start, questions and answer only).
        clock: the time source (tests pass a fake one).
    """

    def __init__(
        self,
        say: Callable[..., Any],
        *,
        language: str | None = None,
        min_interval_s: float = 4.0,
        speak_steps: bool = True,
        announce_start: bool = True,
        max_answer_chars: int = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self.language = language
        self.min_interval_s = min_interval_s
        self.speak_steps = speak_steps
        self.announce_start = announce_start
        self.max_answer_chars = max_answer_chars
        self.clock = clock
        self.said: list[SpokenItem] = []
        """Everything the policy decided to say, in order."""
        self.skipped = 0
        """Step outcomes left unsaid by the rate limit."""
        self._last_progress_at: float | None = None
        self._step_tools: dict[int, list[tuple[str, bool]]] = {}
        self._lang = language or "en"
        self._seen_text = ""

    def attach(self, bus: ev.EventBus) -> Callable[[], None]:
        """Subscribe to ``bus`` (``agent.events``); returns the unsubscribe function."""
        return bus.subscribe(self.on_event)

    def phrase(self, key: str, **values: str) -> str:
        table = PHRASES.get(self._lang) or PHRASES["en"]
        return table[key].format(**values).strip()

    # -- events ------------------------------------------------------------------------------
    def on_event(self, event: ev.AgentEvent) -> None:
        if isinstance(event, ev.RunStarted):
            self._step_tools.clear()
            self._last_progress_at = None
            self._seen_text = ""
            self._lang = self.language or detect_language(event.instruction) or "en"
            if self.announce_start:
                self._emit(SpokenItem("started", self.phrase("started")))
                self._last_progress_at = self.clock()
        elif isinstance(event, ev.ToolStarted) and event.call is not None and _ASK_TOOL.match(event.call.name):
            question = next((str(v) for k, v in event.call.arguments.items() if isinstance(v, str) and v.strip()), "")
            if question:
                self._emit(SpokenItem("question", spoken_text(question, max_chars=self.max_answer_chars)))
        elif isinstance(event, ev.ModelTextDelta) and event.channel == "visible" and self.language is None:
            # A spoken command has no text; the model's own words tell its language.
            self._seen_text = (self._seen_text + event.text)[-400:]
            self._lang = detect_language(self._seen_text) or self._lang
        elif isinstance(event, ev.ToolFinished) and event.call is not None:
            failed = event.result is not None and event.result.is_error
            self._step_tools.setdefault(event.step, []).append((event.call.name, failed))
        elif isinstance(event, ev.StepFinished):
            self._step_outcome(event.step)
        elif isinstance(event, ev.RunFinished):
            self._finished(event)

    def approver(self, inner: Approver) -> Approver:
        """Wrap an approver so the question is said aloud before it is asked.

        (The loop's ``PolicyDecided`` event comes after the answer, too late to ask by voice.)"""

        async def ask(call: ToolCall, reason: str) -> bool | Approval:
            text = self.phrase("approval", tool=_human_name(call.name), reason=_first_sentence(reason))
            self._emit(SpokenItem("question", text))
            answer = inner(call, reason)
            if inspect.isawaitable(answer):
                answer = await answer
            return answer if isinstance(answer, Approval) else bool(answer)  # keep edited arguments

        return ask

    def _step_outcome(self, step: int) -> None:
        tools = self._step_tools.pop(step, [])
        if not tools or not self.speak_steps:
            return
        now = self.clock()
        if self._last_progress_at is not None and now - self._last_progress_at < self.min_interval_s:
            self.skipped += 1
            return
        sep = self.phrase("sep") if self._lang in PHRASES else ", "
        failed = _unique(name for name, bad in tools if bad)
        names = _unique(name for name, _ in tools)
        if failed:
            text = self.phrase("failed", tools=sep.join(_human_name(n) for n in failed))
        else:
            text = self.phrase("done", tools=sep.join(_human_name(n) for n in names))
        self._last_progress_at = now
        self._emit(SpokenItem("progress", text))

    def _finished(self, event: ev.RunFinished) -> None:
        if event.answer and event.answer.strip():
            text = spoken_text(event.answer, max_chars=self.max_answer_chars, code_phrase=self.phrase("code"))
            self._emit(SpokenItem("answer", text or self.phrase("no_answer"), interrupt=True))
        elif event.reason in ("answer", "finishing_tool"):
            self._emit(SpokenItem("answer", self.phrase("no_answer"), interrupt=True))
        else:
            reason = event.reason.replace("_", " ") or "unknown"
            self._emit(SpokenItem("error", self.phrase("stopped", reason=reason), interrupt=True))

    def _emit(self, item: SpokenItem) -> None:
        if not item.text:
            return
        self.said.append(item)
        self._say(item.text, kind=item.kind, interrupt=item.interrupt)


def _first_sentence(text: str) -> str:
    text = " ".join((text or "").split())
    parts = _SENTENCE_END.split(text, maxsplit=1)
    return parts[0][:160] if parts else ""


def _unique(names: Any) -> list[str]:
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n, None)
    return list(seen)
