"""Embodiment descriptions: which robot one set of Qwen-VLA weights is driving (pure core)."""

from .embodiment import Embodiment
from .loader import (
    EmbodimentError,
    Problem,
    list_shipped_embodiments,
    load_embodiment,
    resolve_embodiment_path,
    shipped_embodiment_dir,
)
from .schema import ActionGroup, CameraSpec, CommandOutput, JointSpec, StateSource

__all__ = [
    "ActionGroup",
    "CameraSpec",
    "CommandOutput",
    "Embodiment",
    "EmbodimentError",
    "JointSpec",
    "Problem",
    "StateSource",
    "list_shipped_embodiments",
    "load_embodiment",
    "resolve_embodiment_path",
    "shipped_embodiment_dir",
]
