"""The Qwen-VLA model (pure core, no ROS): Qwen VL backbone + DiT flow-matching action decoder.

Main entry points: :class:`QwenVLAPolicy` (``from_pretrained``, ``from_backbone``,
``predict_chunk``, ``compute_loss``, ``save_pretrained``), :class:`NormStats`, and
:func:`build_tiny_policy` for an offline, untrained policy.
"""

from .backbone import BackboneFeatures, QwenBackbone
from .config import PolicyConfig
from .dit import DIT_PRESETS, ActionDiT, DiTConfig, count_parameters, dit_preset
from .errors import CheckpointError, MissingNormalizationError, ModelInputError
from .normalization import NormStats, VectorStats
from .policy import QwenVLAPolicy
from .processor import ImageOnlyProcessor, PromptSample, build_chat_prompt
from .tiny import build_tiny_backbone, build_tiny_policy, tiny_backbone

__all__ = [
    "DIT_PRESETS",
    "ActionDiT",
    "BackboneFeatures",
    "CheckpointError",
    "DiTConfig",
    "ImageOnlyProcessor",
    "MissingNormalizationError",
    "ModelInputError",
    "NormStats",
    "PolicyConfig",
    "PromptSample",
    "QwenBackbone",
    "QwenVLAPolicy",
    "VectorStats",
    "build_chat_prompt",
    "build_tiny_backbone",
    "build_tiny_policy",
    "count_parameters",
    "dit_preset",
    "tiny_backbone",
]
