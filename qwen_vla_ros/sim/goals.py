"""Which goal an instruction names, for the language-conditioned sim tasks (pure core)."""

from __future__ import annotations

import re


def goal_from_instruction(text: str, goals: tuple[str, ...]) -> str | None:
    """The one goal word an instruction names (``None`` if it names none or several)."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    named = [g for g in goals if g in words]
    return named[0] if len(named) == 1 else None
