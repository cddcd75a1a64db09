"""Training (pure core, no ROS): the four Qwen-VLA stages on one CPU, one GPU or many.

Stages T2A, CPT, SFT and RL are YAML configs (``config/training``) validated by
:mod:`.config`; :func:`train` runs one through HF ``accelerate`` and writes a
``QwenVLAPolicy.save_pretrained`` folder. See docs/training.md.

Names are imported lazily so ``qwen-vla --help`` does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "StageConfig": ".config",
    "load_stage_config": ".config",
    "TrainingConfigError": ".errors",
    "TrainingError": ".errors",
    "train": ".trainer",
    "Trainer": ".trainer",
    "TrainSummary": ".summary",
    "RolloutEnv": ".rl",
    "StepResult": ".rl",
    "AlohaSimEnv": ".sim_env",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
