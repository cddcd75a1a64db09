"""Which weights train: freezing backbone parts and building the optimizer's parameter groups.

Modes (``freeze`` in a stage config):

* ``none``: backbone (language model and vision tower) and decoder train;
* ``vision``: the vision tower is frozen, language model and decoder train;
* ``all``: only the decoder trains; the backbone runs without gradients.

In text-only mode (T2A) the vision tower sees nothing and is always frozen.

The language-model head (``lm_head``) is never used by the action loss; unless it shares
its weights with the input embeddings it stays frozen, so no optimizer state is spent on it
(for Qwen3.5-4B it is a 640 M-parameter matrix). An image-text hook that needs it can
unfreeze it (``train_lm_head=True``).
"""

from __future__ import annotations

from torch import nn

from ..model.policy import QwenVLAPolicy
from .config import FreezeMode, OptimizerConfig

FREEZE_MODES = ("none", "vision", "all")


def vision_tower(policy: QwenVLAPolicy) -> nn.Module | None:
    """The backbone's vision encoder (``model.model.visual`` in every supported family)."""
    inner = getattr(policy.backbone.model, "model", None)
    return getattr(inner, "visual", None)


def _lm_head(policy: QwenVLAPolicy) -> nn.Module | None:
    return getattr(policy.backbone.model, "lm_head", None)


def apply_freeze(policy: QwenVLAPolicy, mode: FreezeMode, *, text_only: bool = False, train_lm_head: bool = False) -> None:
    """Set ``requires_grad`` on the backbone's parts; the decoder always trains.

    ``text_only``: no images reach the backbone, so the vision tower is frozen whatever
    the mode (it would get no gradient; DDP would also wait for one).
    """
    if mode not in FREEZE_MODES:
        raise ValueError(f"freeze mode {mode!r} is not one of {FREEZE_MODES}")
    policy.set_backbone_frozen(mode == "all")
    policy.decoder.requires_grad_(True)
    if mode == "all":
        return
    tower = vision_tower(policy)
    if mode == "vision" or text_only:
        if tower is None and mode == "vision":
            raise ValueError("freeze: vision, but the backbone has no vision tower (model.model.visual)")
        if tower is not None:
            tower.requires_grad_(False)
    head = _lm_head(policy)
    embeddings = policy.backbone.model.get_input_embeddings()
    tied = head is not None and embeddings is not None and head.weight is embeddings.weight
    if head is not None and not tied:
        head.requires_grad_(train_lm_head)


def set_train_mode(policy: QwenVLAPolicy, mode: FreezeMode, text_only: bool = False) -> None:
    """``policy.train()``, keeping frozen parts in eval mode (no dropout in frozen weights)."""
    policy.train()
    if mode == "vision" or text_only:
        tower = vision_tower(policy)
        if tower is not None:
            tower.eval()


def parameter_groups(policy: QwenVLAPolicy, optimizer: OptimizerConfig) -> list[dict]:
    """AdamW groups: decoder at ``lr``, its key-pose head at ``lr * key_pose_lr_scale``,
    trainable backbone weights at ``lr * backbone_lr_scale``.

    Biases and norm weights (1-D tensors) get no weight decay.
    """
    head = policy.decoder.key_pose
    in_head = {id(p) for p in head.parameters()} if head is not None else set()
    parts = (
        ([p for p in policy.decoder.parameters() if id(p) not in in_head], optimizer.lr),
        ([p for p in policy.decoder.parameters() if id(p) in in_head], optimizer.lr * optimizer.key_pose_lr_scale),
        (list(policy.backbone.parameters()), optimizer.lr * optimizer.backbone_lr_scale),
    )
    groups = []
    for module_params, lr in parts:
        params = [p for p in module_params if p.requires_grad]
        decayed = [p for p in params if p.ndim >= 2]
        plain = [p for p in params if p.ndim < 2]
        if decayed:
            groups.append({"params": decayed, "lr": lr, "weight_decay": optimizer.weight_decay})
        if plain:
            groups.append({"params": plain, "lr": lr, "weight_decay": 0.0})
    return groups


def count_parameters(policy: QwenVLAPolicy) -> dict[str, int]:
    """Trainable and total parameter counts of decoder and backbone."""
    counts = {}
    for name, module in (("decoder", policy.decoder), ("backbone", policy.backbone)):
        counts[f"{name}_trainable"] = sum(p.numel() for p in module.parameters() if p.requires_grad)
        counts[f"{name}_total"] = sum(p.numel() for p in module.parameters())
    return counts
