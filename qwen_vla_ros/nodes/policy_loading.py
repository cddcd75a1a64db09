"""Resolve the inference node's ``model`` parameter to a loaded policy."""

from __future__ import annotations

import os
from pathlib import Path

from ..embodiment import Embodiment, list_shipped_embodiments
from ..model.shipped import SHIPPED_MODELS, shipped_model_dir

#: The untrained tiny policy, built offline on first use: what runs without real weights.
TINY = "tiny"


def tiny_policy_dir() -> Path:
    cache = Path(os.environ.get("QWEN_VLA_CACHE", Path.home() / ".cache" / "qwen_vla_ros"))
    return cache / "tiny-untrained-qwen3_5-v2"


def ensure_tiny_policy(logger=None) -> Path:
    """Build the tiny untrained policy once (seconds, no network) and return its folder."""
    from ..model.tiny import build_tiny_policy

    folder = tiny_policy_dir()
    if not (folder / "policy_config.json").is_file():
        if logger is not None:
            logger.warning(f"building the tiny UNTRAINED policy in {folder}: it moves, it does not solve tasks")
        build_tiny_policy(
            folder, family="qwen3_5", embodiments=tuple(list_shipped_embodiments()), placeholder_stats="home"
        )
    return folder


def load_policy(params: dict, embodiment: Embodiment, logger):
    """Load ``params['model']`` (folder, hub id, a shipped name such as 'sim_demo', or 'tiny')
    on ``params['device']``."""
    import torch

    from ..model.normalization import NormStats
    from ..model.policy import QwenVLAPolicy

    source = params["model"]
    if source in SHIPPED_MODELS:
        source = str(shipped_model_dir(source))
    elif source == TINY:
        source = str(ensure_tiny_policy(logger))
        logger.warning("model: tiny untrained policy (random weights) -- outputs are not a trained skill")
    policy = QwenVLAPolicy.from_pretrained(
        source, device=params["device"], dtype=getattr(torch, params["dtype"])
    )
    policy.eval()
    if params["model"] == TINY and embodiment.name not in policy.norm_stats:
        # untrained anyway: any embodiment file (a user's own too) gets placeholder statistics
        policy.set_normalization(embodiment.name, NormStats.near_home(embodiment))
    policy.normalization_for(embodiment)  # fail at start-up, not at the first chunk, if stats are missing
    logger.info(f"policy loaded from {source} for embodiment {embodiment.name}")
    return policy
