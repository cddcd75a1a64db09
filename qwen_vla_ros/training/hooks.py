"""The module ``accelerate`` wraps: the policy's loss plus the optional image-text hook.

Wrapping ``compute_loss`` in a module's ``forward`` matters: DDP synchronises gradients
and FSDP gathers weights only around ``forward``. (FSDP units are the backbone's decoder
layers and vision blocks and the DiT blocks; the policy calls each through ``forward``.) The image-text hook runs inside the same
forward, so its gradients are synchronised too.

Image-text hook (stage cpt, ``image_text`` in the config): a callable
``hook(policy, step, options) -> torch.Tensor | None`` named ``module:callable``. It
returns a scalar loss on general image-text data, for instance next-token loss on
captions through ``policy.backbone.model`` (whose ``lm_head`` is then trained), or None to
skip a step. Its loss is added to the action loss times ``image_text.weight`` on every
``image_text.every_steps``-th step. The mix of image-text and robot data is thus set by
``every_steps`` and ``weight``. A hook that trains weights of its own (a head) names a
``prepare(policy, options)`` attribute: the trainer calls it before building the optimizer
(training/grounding.py's ``scene_grounding_loss`` adds the decoder's grounding pointer),
and a ``close()`` attribute, called when training ends, frees what it holds (renderers).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from ..model.policy import QwenVLAPolicy
from .config import ImageTextConfig
from .errors import TrainingError

ImageTextHook = Callable[[QwenVLAPolicy, int, dict], "torch.Tensor | None"]


def load_image_text_hook(config: ImageTextConfig) -> ImageTextHook | None:
    """The configured hook, or None when disabled; a clear error when it cannot be imported."""
    if not config.enabled:
        return None
    module_name, _, attribute = str(config.hook).partition(":")
    try:
        hook = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise TrainingError(f"image_text.hook {config.hook!r}: cannot load 'module:callable' ({error})") from error
    if not callable(hook):
        raise TrainingError(f"image_text.hook {config.hook!r} is not callable")
    return hook


class PolicyLoss(nn.Module):
    """``forward(batch, generator, step)`` -> ``loss`` (to minimise), ``action_loss`` (the flow
    loss alone, comparable with the validation loss), ``aux_loss`` (image-text hook) and
    ``subgoal_loss`` (key pose)."""

    def __init__(self, policy: QwenVLAPolicy, hook: ImageTextHook | None = None, config: ImageTextConfig | None = None,
                 state_dropout: float = 0.0, subgoal_weight: float = 0.0, teacher_forcing: float = 0.0):
        super().__init__()
        self.policy, self.state_dropout, self.subgoal_weight = policy, state_dropout, subgoal_weight
        self.teacher_forcing = teacher_forcing
        # FSDP's transformer auto-wrap reads this when no layer classes are configured: one
        # shard unit per backbone decoder layer / vision block and per DiT block.
        self._no_split_modules = sorted({*(getattr(policy.backbone.model, "_no_split_modules", None) or ()), "DiTBlock"})
        self.hook = hook
        self.hook_config = config or ImageTextConfig()

    def forward(self, batch: dict, generator: torch.Generator | None = None, step: int | None = None) -> dict:
        out = self.policy.compute_loss(batch, generator=generator, state_dropout=self.state_dropout,
                                       subgoal_weight=self.subgoal_weight, teacher_forcing=self.teacher_forcing)
        action_loss = out["flow_loss"]
        aux = None
        if self.hook is not None and step is not None and step % self.hook_config.every_steps == 0:
            aux = self.hook(self.policy, step, dict(self.hook_config.options))
            if aux is not None and (not isinstance(aux, torch.Tensor) or aux.ndim != 0):
                raise TrainingError(f"image_text.hook must return a scalar tensor or None, got {aux!r}")
        loss = out["loss"] if aux is None else out["loss"] + self.hook_config.weight * aux
        zero = action_loss.detach() * 0
        return {"loss": loss, "action_loss": action_loss.detach(), "aux_loss": zero if aux is None else aux.detach(),
                "subgoal_loss": out["subgoal_loss"]}
