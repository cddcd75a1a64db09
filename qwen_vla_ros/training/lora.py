"""LoRA adapters on the backbone (``peft``), and the other memory settings of a run.

:func:`apply_lora` freezes every backbone weight and injects LoRA layers in place
(``peft.inject_adapter_in_model``), so the module tree keeps its paths: the backbone,
``PolicyLoss`` and FSDP's wrapping see the same model with a few extra ``lora_A``/``lora_B``
weights. :meth:`QwenBackbone.save_pretrained` writes the merged weights W + (alpha/r) B A,
so a LoRA run's ``final/`` is an ordinary policy folder; :func:`save_adapters` also writes
the adapters alone in peft's format.

:func:`cast_frozen` stores weights that do not train in bfloat16 (or float16), and
:func:`enable_gradient_checkpointing` turns on activation recomputation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..model.policy import QwenVLAPolicy
from .config import GradientCheckpointingConfig, LoraConfig
from .errors import TrainingError
from .freezing import vision_tower

ADAPTER_DIR = "lora"
ADAPTER_NAME = "default"


def language_model(policy: QwenVLAPolicy) -> nn.Module:
    """The backbone's text decoder (``model.model.language_model`` in every supported family)."""
    inner = getattr(policy.backbone.model, "model", None)
    found = getattr(inner, "language_model", None)
    if found is None:
        raise TrainingError("the backbone has no language model at model.model.language_model")
    return found


def lora_target_names(policy: QwenVLAPolicy, config: LoraConfig) -> list[str]:
    """Full module names (in ``policy.backbone.model``) of the ``nn.Linear`` layers to adapt.

    Language-model layers whose last name is in ``target_modules``; with ``vision``, the
    vision blocks' layers in ``vision_target_modules`` (never the patch merger, whose
    output width is the language model's).
    """
    prefix = {id(m): n for n, m in policy.backbone.model.named_modules()}
    names = []
    lm = language_model(policy)
    for name, module in lm.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in config.target_modules:
            names.append(f"{prefix[id(lm)]}.{name}")
    tower = vision_tower(policy) if config.vision else None
    if config.vision and tower is None:
        raise TrainingError("lora.vision: the backbone has no vision tower (model.model.visual)")
    if tower is not None:
        for name, module in tower.named_modules():
            if (isinstance(module, nn.Linear) and name.startswith("blocks.")
                    and name.rsplit(".", 1)[-1] in config.vision_target_modules):
                names.append(f"{prefix[id(tower)]}.{name}")
    if not names:
        available = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)})
        raise TrainingError(f"lora.target_modules {list(config.target_modules)} match no linear layer of the "
                            f"language model (its layers: {', '.join(available)})")
    return names


def apply_lora(policy: QwenVLAPolicy, config: LoraConfig, seed: int = 0) -> int:
    """Freeze the backbone's weights and add trainable LoRA adapters; returns how many layers.

    The adapters' initial values come from ``seed`` (B starts at zero, so the policy's
    outputs are unchanged until training moves it). Gradients must reach the backbone, so
    the policy must not be in frozen-backbone mode.
    """
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    if policy.config.freeze_backbone:
        raise TrainingError("LoRA needs gradients through the backbone: freeze must be 'none' or 'vision'")
    targets = lora_target_names(policy, config)
    peft_config = PeftLoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=targets, bias="none")
    policy.backbone.model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(peft_config, policy.backbone.model, adapter_name=ADAPTER_NAME)
    # peft leaves only adapter weights trainable in the model it touched; say so explicitly
    for name, parameter in policy.backbone.model.named_parameters():
        parameter.requires_grad_(".lora_" in name)
    return len(targets)


def lora_parameter_count(policy: QwenVLAPolicy) -> int:
    return sum(p.numel() for n, p in policy.backbone.model.named_parameters() if ".lora_" in n)


def save_adapters(policy: QwenVLAPolicy, directory: str | Path) -> Path | None:
    """The adapters alone, as peft writes them (``adapter_config.json``,
    ``adapter_model.safetensors``); None when the backbone has none."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    model = policy.backbone.model
    peft_config = getattr(model, "peft_config", {}).get(ADAPTER_NAME)
    if peft_config is None:
        return None
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    # peft's files name layers under the PeftModel wrapper of the bare Hugging Face model
    tensors = {f"base_model.model.{k}": v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, str(root / "adapter_model.safetensors"))
    peft_config.save_pretrained(str(root))
    payload = json.loads((root / "adapter_config.json").read_text())
    (root / "adapter_config.json").write_text(json.dumps(payload, indent=1, sort_keys=True))
    return root


def cast_frozen(policy: QwenVLAPolicy, dtype: torch.dtype) -> int:
    """Store the backbone weights that do not train in ``dtype``; returns the parameters cast.

    Module by module: a module is cast only when none of its own weights train, so no layer
    mixes dtypes inside. Buffers (rotary frequencies) keep their precision.
    """
    cast = 0
    for module in policy.backbone.model.modules():
        own = list(module.parameters(recurse=False))
        if not own or any(p.requires_grad for p in own) or all(p.dtype == dtype for p in own):
            continue
        for parameter in own:
            if parameter.is_floating_point():
                parameter.data = parameter.data.to(dtype)
                cast += parameter.numel()
    return cast


def enable_gradient_checkpointing(policy: QwenVLAPolicy, config: GradientCheckpointingConfig) -> None:
    """Hugging Face's per-layer checkpointing in the backbone (``activation_checkpointing_enable``,
    formerly ``gradient_checkpointing_enable``); per-block in the DiT."""
    if config.backbone:
        # non-reentrant: works when the inputs need no gradient (frozen embeddings, LoRA)
        model, options = policy.backbone.model, {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.23 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    policy.decoder.gradient_checkpointing = config.decoder
