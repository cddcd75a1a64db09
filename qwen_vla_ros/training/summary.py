"""What a training run reports at the end: losses, speed, where the policy is."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


def _loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@dataclass
class TrainSummary:
    """Outcome of one run (also written as ``<output>/train_summary.json``).

    Attributes:
        processes: number of training processes (devices).
        start_step, step: optimizer steps before this run (resume) and at its end.
        samples_per_step: batch size * accumulation * processes.
        train_loss: mean training loss over the last logging window.
        initial_val_loss, final_val_loss: held-out loss at the first and last evaluation
            (the first is the one before any training, also for resumed runs).
        steps_per_s: optimizer steps per second of this run (evaluations included), 1/s.
        seconds: wall time of the loop, s.
        rl_rounds: per collection round: episodes, mean return, success rate.
        memory_estimate: the estimate printed at the start (bytes per part, see ``memory``).
        peak_memory_bytes, peak_memory_source: the measured peak of the training loop, and
            what measured it (CUDA allocator, or the CPU process's RSS high-water mark).
    """

    stage: str
    processes: int
    device: str
    start_step: int
    step: int
    samples_per_step: int
    train_loss: float | None
    initial_val_loss: float | None
    final_val_loss: float | None
    steps_per_s: float
    seconds: float
    policy_dir: str
    checkpoint_dir: str
    parameters: dict[str, int] = field(default_factory=dict)
    rl_rounds: list[dict] = field(default_factory=list)
    memory_estimate: dict = field(default_factory=dict)
    peak_memory_bytes: int | None = None
    peak_memory_source: str = ""

    def to_text(self) -> str:
        trainable = self.parameters.get("decoder_trainable", 0) + self.parameters.get("backbone_trainable", 0)
        total = self.parameters.get("decoder_total", 0) + self.parameters.get("backbone_total", 0)
        lines = [
            f"training summary: stage {self.stage}, {self.processes} process(es) on {self.device}",
            f"  steps        {self.start_step} -> {self.step} ({self.samples_per_step} samples/step)",
            f"  parameters   {trainable:,} trainable of {total:,}",
            f"  train loss   {_loss(self.train_loss)}",
            f"  val loss     {_loss(self.initial_val_loss)} -> {_loss(self.final_val_loss)} (held-out episodes)",
            f"  speed        {self.steps_per_s:.2f} steps/s ({self.seconds:.1f} s)",
        ]
        if self.rl_rounds:
            first, last = self.rl_rounds[0], self.rl_rounds[-1]
            lines.append(
                f"  rl           {len(self.rl_rounds)} rounds; success {first['success_rate']:.0%} -> "
                f"{last['success_rate']:.0%}, mean return {first['mean_return']:.3f} -> {last['mean_return']:.3f}"
            )
        if self.peak_memory_bytes is not None:
            estimate = self.memory_estimate.get("total")
            lines.append(f"  memory       peak {self.peak_memory_bytes / 2**30:.2f} GiB ({self.peak_memory_source})"
                         + (f", estimated {estimate / 2**30:.2f} GiB" if estimate else ""))
        lines += [f"  policy       {self.policy_dir}  (QwenVLAPolicy.from_pretrained)",
                  f"  checkpoint   {self.checkpoint_dir or 'none'}  (--resume continues from it)"]
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1, allow_nan=True))

