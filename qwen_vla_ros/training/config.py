"""Stage configs: one YAML file per training stage, validated strictly on load.

Shipped stages (``config/training/<stage>.yaml``):

* ``t2a``: instruction + state -> actions, no images; backbone frozen in text-only mode,
  decoder trained.
* ``cpt``: multimodal; several datasets (several embodiments) mixed by weight, optional
  image-text batches through a hook to keep the backbone's knowledge.
* ``sft``: one embodiment's demonstrations.
* ``rl``: rollouts in a simulated rig with a success reward; see :mod:`.rl`.

Every mapping forbids unknown keys, so a typo (``lerning_rate``) is an error that names
the key and the allowed ones instead of a silently ignored setting. Files may start with
``extends: other.yaml`` (relative to the file, or a shipped stage name); mappings merge
key by key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import TrainingConfigError

STAGES = ("t2a", "cpt", "sft", "rl")
FreezeMode = Literal["none", "vision", "all"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetEntry(_Strict):
    """One LeRobot v3.0 dataset in the mix.

    Attributes:
        path: dataset root folder.
        embodiment: shipped name or YAML path; default: the run's ``embodiment``.
        weight: relative sampling weight (> 0): batches come from this dataset with
            probability weight / sum(weights).
    """

    path: str
    embodiment: str | None = None
    weight: float = Field(1.0, gt=0)


class OptimizerConfig(_Strict):
    """AdamW. ``backbone_lr_scale`` multiplies ``lr`` for the unfrozen backbone parts,
    ``key_pose_lr_scale`` for the decoder's key-pose head (with its grounding pointer)."""

    lr: float = Field(1e-4, gt=0)
    backbone_lr_scale: float = Field(0.1, ge=0)
    key_pose_lr_scale: float = Field(1.0, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)


class ScheduleConfig(_Strict):
    """Learning-rate schedule (transformers ``get_scheduler`` names), per optimizer step."""

    name: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(0, ge=0)


class EmaConfig(_Strict):
    """Exponential moving average of the decoder weights.

    The effective decay at update n is ``min(decay, (1 + n) / (10 + n))``, so early
    averages follow the weights closely. With ``enabled``, evaluation and the final
    checkpoint use the averaged decoder.
    """

    enabled: bool = True
    decay: float = Field(0.999, gt=0, lt=1)


class EvalConfig(_Strict):
    """Validation on held-out episodes (``val_fraction`` of each dataset's episodes)."""

    every_steps: int = Field(100, ge=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    max_batches: int = Field(8, ge=1)


class CheckpointConfig(_Strict):
    """Resumable training state under ``<output>/checkpoints/step-XXXXXXXX``."""

    every_steps: int = Field(500, ge=1)
    keep_last: int = Field(2, ge=1)


class ImageTextConfig(_Strict):
    """Hook for general image-text batches (CPT), to keep the backbone's knowledge.

    Attributes:
        enabled: call the hook.
        hook: ``module:callable``; called as ``hook(policy, step, options)`` it returns
            a scalar loss tensor (e.g. next-token loss on captions) or None; see
            :mod:`qwen_vla_ros.training.hooks`.
        every_steps: call it on every n-th optimizer step.
        weight: the hook's loss is added to the action loss times this weight.
        options: free-form mapping handed to the hook.
    """

    enabled: bool = False
    hook: str | None = None
    every_steps: int = Field(1, ge=1)
    weight: float = Field(0.1, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _hook_given(self) -> ImageTextConfig:
        if self.enabled and not self.hook:
            raise ValueError("image_text.enabled needs image_text.hook ('module:callable')")
        return self


class RLConfig(_Strict):
    """Reinforcement learning in simulation (see :mod:`qwen_vla_ros.training.rl`).

    Attributes:
        method: ``reward_weighted`` (weights exp((R - max R) / temperature)) or
            ``filtered_bc`` (only episodes with return >= success_threshold).
        episodes_per_round: rollouts collected before each round of updates.
        updates_per_round: optimizer steps per round, on the replay buffer.
        episode_steps: control steps per episode (duration = steps * embodiment dt, s).
        execute_steps: actions of each predicted chunk executed before replanning.
        temperature: reward_weighted softness (returns are in [0, 1]).
        success_threshold: return at or above which an episode counts as a success.
        buffer_episodes: the replay buffer keeps this many most recent episodes.
        demo_fraction: probability that a batch comes from the demonstration datasets
            instead of the buffer (keeps the policy near the demonstrations).
        task: simulated task (``transfer_cube`` or ``insertion``).
        instruction: language task given to the policy during rollouts.
        env: ``module:callable`` making the environment (``factory(embodiment, config)``);
            default the MuJoCo ALOHA sim.
        rollout_noise_scale: the flow's noise scale while collecting rollouts, in [0, 1]: the
            exploration (reward weighting only re-weights what the rollouts did). None = the
            policy's own ``noise_scale``, which a deployed policy often has at 0 (the same chunk
            for the same observation: every rollout of a scene alike). The saved policy keeps
            its own scale either way.
    """

    method: Literal["reward_weighted", "filtered_bc"] = "reward_weighted"
    episodes_per_round: int = Field(8, ge=1)
    updates_per_round: int = Field(20, ge=1)
    episode_steps: int = Field(400, ge=1)
    execute_steps: int = Field(25, ge=1)
    temperature: float = Field(0.25, gt=0)
    success_threshold: float = Field(1.0, gt=0, le=1)
    buffer_episodes: int = Field(64, ge=1)
    demo_fraction: float = Field(0.0, ge=0, le=1)
    task: str = "transfer_cube"
    instruction: str = "pick up the cube with the right arm and hand it to the left arm"
    env: str | None = None
    rollout_noise_scale: float | None = Field(1.0, ge=0, le=1)


#: Linear layers of the language model that get LoRA adapters by default: attention
#: (full and Qwen3.5's linear attention) and MLP projections, in every supported family.
LM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "in_proj_qkv", "in_proj_z", "out_proj",
                   "gate_proj", "up_proj", "down_proj")
#: The vision blocks' attention and MLP layers (the patch merger keeps its weights).
VISION_LORA_TARGETS = ("qkv", "proj", "linear_fc1", "linear_fc2", "gate_proj", "up_proj", "down_proj")


class LoraConfig(_Strict):
    """Low-rank adapters (``peft`` LoRA) on the backbone instead of training its weights.

    With ``enabled`` every weight of the backbone is frozen and adapters W + (alpha/rank) B A
    are trained on the language model's ``target_modules`` (last names of ``nn.Linear``
    layers), and on the vision blocks' ``vision_target_modules`` when ``vision``; the decoder
    trains in full. ``final/`` holds the merged weights (the inference node loads it like
    any policy); ``save_adapters`` also writes the adapters alone to ``final/lora/`` (peft
    format, for ``peft.PeftModel.from_pretrained`` on the initial backbone).
    """

    enabled: bool = False
    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = LM_LORA_TARGETS
    vision: bool = False
    vision_target_modules: tuple[str, ...] = VISION_LORA_TARGETS
    save_adapters: bool = False

    @model_validator(mode="after")
    def _targets_given(self) -> LoraConfig:
        if self.enabled and not self.target_modules:
            raise ValueError("lora.target_modules is empty: name the language model's layers to adapt")
        if self.vision and not self.vision_target_modules:
            raise ValueError("lora.vision needs lora.vision_target_modules")
        return self


class GradientCheckpointingConfig(_Strict):
    """Recompute activations in the backward pass instead of keeping them (less memory,
    about a third more compute): ``backbone`` through Hugging Face's
    ``gradient_checkpointing_enable`` (per decoder layer / vision block), ``decoder`` per
    DiT block (``torch.utils.checkpoint``). Only parts that get gradients are affected."""

    backbone: bool = False
    decoder: bool = False


class StageConfig(_Strict):
    """One training stage. CLI flags (``--dataset``, ``--max-steps`` ...) override fields."""

    stage: Literal["t2a", "cpt", "sft", "rl"]
    description: str = ""
    embodiment: str | None = None
    datasets: tuple[DatasetEntry, ...] = ()
    text_only: bool = False
    freeze: FreezeMode = "none"
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    max_steps: int = Field(1000, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    clip_grad_norm: float | None = Field(1.0, gt=0)
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)
    tiny_family: Literal["qwen3_5", "qwen3_vl", "qwen2_5_vl"] = "qwen3_5"
    # decoder preset (tiny | small | paper) when --init is a bare Qwen backbone, not a policy
    decoder_preset: str = "small"
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    ema: EmaConfig = EmaConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    image_text: ImageTextConfig = ImageTextConfig()
    rl: RLConfig | None = None
    lora: LoraConfig = LoraConfig()
    gradient_checkpointing: GradientCheckpointingConfig = GradientCheckpointingConfig()
    # dtype of the backbone weights that do not train (frozen parts, LoRA's base weights);
    # null keeps them as loaded. bfloat16 halves their memory; the saved backbone keeps it.
    frozen_dtype: Literal["bfloat16", "float16"] | None = None
    # Normalisation statistics: "data" computes them from this stage's datasets; "keep" keeps
    # the --init policy's statistics for the embodiments it already has (continuing a run on
    # more data of the same kind without moving the targets the model has learned).
    norm_stats: Literal["data", "keep"] = "data"
    # Relative actions (openpi's DeltaActions for ALOHA): the decoder predicts arm-joint targets
    # as motions from the chunk's start state (model/normalization.py). null keeps the --init
    # policy's choice per embodiment (absolute for a new one); true/false set it for every
    # embodiment of this stage's data. Changing it changes what the decoder's outputs mean.
    relative_actions: bool | None = None
    # Fraction of samples whose proprioceptive state the decoder sees as the dataset mean
    # (0 = never). A policy that reads which arm moves from the state alone never learns to
    # choose it from the image and the instruction (see QwenVLAPolicy.compute_loss).
    state_dropout: float = Field(0.0, ge=0, lt=1)
    # Weight of the key-pose loss (0 = off): the decoder gets a head that predicts, from the
    # backbone's last token, the action at the episode's next grasp or end (data/keyframes.py),
    # and reads that prediction as one more condition token. It makes the backbone say where
    # the named object is; a policy without the head gets one when this is above 0.
    subgoal_weight: float = Field(0.0, ge=0)
    # Fraction of training samples whose decoder reads the true key pose instead of the head's
    # prediction (teacher forcing; needs subgoal_weight > 0). Trained on its own prediction
    # alone, the decoder learnt to ignore the key pose: closed loop with the expert's key pose
    # substituted did no better than with a zero one (docs/training.md, "Stage 5c"). Above 0,
    # the decoder also reads the key pose in its blocks' input (DiTConfig.key_pose_input).
    key_pose_teacher_forcing: float = Field(0.0, ge=0, le=1)
    # The saved policy's inference noise scale (PolicyConfig.noise_scale; None = keep the
    # --init policy's). RL rollouts of this stage sample with it too.
    noise_scale: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _stage_rules(self) -> StageConfig:
        if self.stage == "t2a" and not self.text_only:
            raise ValueError("stage t2a trains without images: set text_only: true")
        if self.stage == "rl" and self.rl is None:
            raise ValueError("stage rl needs an 'rl' section")
        if self.stage != "rl" and self.rl is not None:
            raise ValueError(f"'rl' settings only apply to stage rl, not {self.stage}")
        if self.key_pose_teacher_forcing > 0 and self.subgoal_weight <= 0:
            raise ValueError("key_pose_teacher_forcing needs the key-pose head: set subgoal_weight > 0")
        if self.image_text.enabled and self.stage != "cpt":
            raise ValueError("image_text batches belong to stage cpt")
        if self.lora.enabled and self.freeze == "all":
            raise ValueError("lora.enabled trains adapters in the backbone: freeze must be 'none' or 'vision', not 'all'")
        if self.lora.enabled and self.lora.vision and (self.freeze == "vision" or self.text_only):
            raise ValueError("lora.vision adapts the vision tower: it needs freeze 'none' and images (text_only false)")
        embodiments = {d.embodiment or self.embodiment for d in self.datasets}
        if self.stage == "sft" and len(embodiments) > 1:
            raise ValueError(f"stage sft trains one embodiment; datasets name {sorted(map(str, embodiments))}")
        return self


def shipped_training_dir() -> Path:
    """The folder of shipped stage configs (source tree or installed share/)."""
    here = Path(__file__).resolve().parents[2] / "config" / "training"
    if here.is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("qwen_vla_ros")) / "config" / "training"
    except Exception:  # noqa: BLE001 - ament index absent or package not installed
        return here


def resolve_stage_path(name_or_path: str | Path) -> Path:
    """A path as given if it is a file, else the shipped stage file of that name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = shipped_training_dir() / f"{Path(str(name_or_path)).stem}.yaml"
    if shipped.is_file():
        return shipped
    raise TrainingConfigError(
        str(name_or_path), [f"no such file, and no shipped stage of that name (shipped: {', '.join(STAGES)})"]
    )


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        raise TrainingConfigError(str(path), ["'extends' forms a cycle"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise TrainingConfigError(str(path), [f"not valid YAML: {error}"]) from None
    if not isinstance(data, dict):
        raise TrainingConfigError(str(path), ["top level must be a mapping of settings"])
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    local = path.parent / str(base_name)
    base_path = local if local.is_file() else resolve_stage_path(base_name)
    return merge_settings(_read_yaml(base_path, (*seen, path.resolve())), data)


def merge_settings(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; any other value replaces the base's."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(error: ValidationError, allowed_by_path: dict[tuple, list[str]]) -> list[str]:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "<top>"
        if item["type"] == "extra_forbidden":
            parent = tuple(p for p in item["loc"][:-1] if not isinstance(p, int))
            allowed = allowed_by_path.get(parent, [])
            lines.append(f"{where}: unknown key (allowed here: {', '.join(allowed)})")
        else:
            lines.append(f"{where}: {item['msg']}")
    return lines


def _allowed_keys(model: type[BaseModel], prefix: tuple = ()) -> dict[tuple, list[str]]:
    """Allowed keys of every nested section, for error messages."""
    allowed = {prefix: sorted(model.model_fields)}
    for name, field in model.model_fields.items():
        # A section is a model, an optional model or a tuple of models.
        candidates = (field.annotation, *getattr(field.annotation, "__args__", ()))
        for kind in candidates:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                allowed.update(_allowed_keys(kind, (*prefix, name)))
    return allowed


def parse_stage_config(data: dict[str, Any], source: str = "<memory>") -> StageConfig:
    """Validate a settings mapping; :class:`TrainingConfigError` lists every problem."""
    try:
        return StageConfig.model_validate(data)
    except ValidationError as error:
        raise TrainingConfigError(source, _problems(error, _allowed_keys(StageConfig))) from None


def load_stage_config(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> StageConfig:
    """Load a stage (shipped name such as ``sft`` or a YAML path), then apply overrides.

    ``overrides`` is a nested mapping merged over the file, e.g.
    ``{"max_steps": 10, "optimizer": {"lr": 3e-4}}``; unknown keys are errors too.
    """
    path = resolve_stage_path(name_or_path)
    data = merge_settings(_read_yaml(path), overrides or {})
    return parse_stage_config(data, str(path) + (" (with overrides)" if overrides else ""))
