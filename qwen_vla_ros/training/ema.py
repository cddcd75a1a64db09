"""Exponential moving average (EMA) of the action decoder's weights.

shadow <- d * shadow + (1 - d) * weight after every optimizer step, with the warm-up
d = min(decay, (1 + n) / (10 + n)) at update n, so the average is not dominated by the
random initial weights. The shadow lives on the weights' device in float32. It works on
whatever part of each tensor this process holds, so it also works on FSDP shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class DecoderEMA:
    """EMA of the floating-point parameters of ``module`` (the decoder)."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = module
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in self._params()}

    def _params(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.module.named_parameters() if p.is_floating_point())

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        for name, param in self._params():
            self.shadow[name].lerp_(param.detach().float(), 1.0 - decay)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the module holds the averaged weights; restored afterwards."""
        backup = {}
        with torch.no_grad():
            for name, param in self._params():
                backup[name] = param.detach().clone()
                param.copy_(self.shadow[name].to(param.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self._params():
                    param.copy_(backup[name])

    # -- checkpointing (accelerate's register_for_checkpointing) ---------------------------
    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        if missing:
            raise ValueError(f"EMA state lacks decoder weights {missing[:5]}: it belongs to another decoder")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
