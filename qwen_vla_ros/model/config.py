"""The policy's stored configuration (``policy_config.json``)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .checkpoint import FORMAT_VERSION
from .dit import DiTConfig
from .errors import CheckpointError


@dataclass(frozen=True)
class PolicyConfig:
    """Decoder shape and inference settings of a :class:`QwenVLAPolicy`.

    Attributes:
        decoder: the DiT's shape, including the shared action space
            (``max_action_dim``) and the longest chunk (``max_horizon``, steps).
        num_inference_steps: Euler steps per chunk.
        feature_layers: backbone hidden states the decoder reads (None = last).
        freeze_backbone: train only the decoder.
        noise_scale: the flow starts from Gaussian noise times this (0 = from its mean: the
            same chunk for the same observation). Below 1 trades the spread of the learnt
            action distribution for the chunk it is centred on; a decoder trained on a few
            hundred demonstrations spreads far more than they do (docs/training.md, "Stage 5c").
    """

    decoder: DiTConfig
    num_inference_steps: int = 10
    feature_layers: tuple[int, ...] | None = None
    freeze_backbone: bool = False
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if not 0.0 <= self.noise_scale <= 1.0:
            raise ValueError(f"noise_scale must be in [0, 1], got {self.noise_scale}")

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "decoder": self.decoder.to_dict(),
            "num_inference_steps": self.num_inference_steps,
            "feature_layers": list(self.feature_layers) if self.feature_layers else None,
            "freeze_backbone": self.freeze_backbone,
            "noise_scale": self.noise_scale,
        }

    @classmethod
    def from_dict(cls, payload: dict, where: str = "policy_config.json") -> PolicyConfig:
        version = payload.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: format_version {version!r}, this code reads {FORMAT_VERSION}"
            )
        decoder_keys = {f.name for f in fields(DiTConfig)}
        decoder = payload.get("decoder")
        if not isinstance(decoder, dict) or set(decoder) - decoder_keys:
            raise CheckpointError(
                f"{where}: 'decoder' must be a mapping with keys from {sorted(decoder_keys)}"
            )
        layers = payload.get("feature_layers")
        try:
            return cls(
                decoder=DiTConfig(**decoder),
                num_inference_steps=int(payload.get("num_inference_steps", 10)),
                feature_layers=tuple(int(i) for i in layers) if layers else None,
                freeze_backbone=bool(payload.get("freeze_backbone", False)),
                noise_scale=float(payload.get("noise_scale", 1.0)),
            )
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{where}: invalid value ({error})") from error
