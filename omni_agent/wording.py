"""Small English helpers for messages: "1 step" / "2 steps", "an int" / "a str"."""

from __future__ import annotations

__all__ = ["article", "plural"]


def plural(count: int, word: str, many: str | None = None) -> str:
    """``plural(1, "step")`` -> "1 step"; ``plural(3, "step")`` -> "3 steps"."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def article(word: str) -> str:
    """``article("int")`` -> "an int"; ``article("str")`` -> "a str" (by the first letter)."""
    return f"{'an' if word[:1].lower() in 'aeiou' and word[:1] else 'a'} {word}"
