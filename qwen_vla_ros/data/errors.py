"""The one exception the data layer raises for bad recordings or datasets (pure core)."""

from __future__ import annotations


class DatasetError(ValueError):
    """A recording or dataset cannot be used as it is.

    Attributes:
        episode: the episode the problem is in (index or a readable label), or None when it
            concerns the whole dataset.
        field: the feature or topic at fault, e.g. ``observation.images.cam_high``, ``action``,
            ``observation.state/left_arm/waist`` or ``meta/info.json``.
        reason: what is wrong, in words.
    """

    def __init__(self, reason: str, *, episode: int | str | None = None, field: str = ""):
        self.episode = episode
        self.field = field
        self.reason = reason
        where = []
        if episode is not None:
            where.append(f"episode {episode}")
        if field:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)
