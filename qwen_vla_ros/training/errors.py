"""Exceptions of the training layer: each names the problem and what to do about it."""

from __future__ import annotations


class TrainingConfigError(ValueError):
    """A stage config (YAML or overrides) is invalid: unknown key, wrong type or value.

    Attributes:
        source: the file (or ``<overrides>``) the problem is in.
        problems: one line per problem, ``key.path: reason``.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid training config {source} ({len(self.problems)} problem(s)):\n{lines}")


class TrainingError(RuntimeError):
    """Training cannot go on: no data, an unusable checkpoint to resume, a broken environment."""
