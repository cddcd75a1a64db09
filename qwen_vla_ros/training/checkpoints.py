"""Resumable training state under ``<output>/checkpoints/step-XXXXXXXX/``.

Each checkpoint folder holds what ``accelerate``'s ``save_state`` writes (model weights as
safetensors, optimizer state, every process's RNG states; FSDP-aware) plus this module's
files: ``ema.safetensors`` (averaged decoder weights; one ``ema-rankNNN`` file per process
under FSDP, whose shards differ: FSDP2's DTensors are saved as each process's local shard), ``scheduler.json`` and, written last
as the completeness marker, ``trainer_state.json`` (step, evaluation history, stage). A
folder without the marker (an interrupted save) is ignored when resuming.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors.torch import load_file, save_file

from .ema import DecoderEMA
from .errors import TrainingError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
SCHEDULER_FILE = "scheduler.json"


@dataclass
class TrainerState:
    """Progress that must survive a restart.

    Attributes:
        stage: the stage that wrote the checkpoint (resuming another stage is refused).
        step: optimizer steps done.
        ema_updates: EMA updates done (== step when EMA is on).
        evals: one record per evaluation: step, val_loss, train_loss.
    """

    stage: str
    step: int = 0
    ema_updates: int = 0
    evals: list[dict] = field(default_factory=list)


def checkpoint_dir(output: Path, step: int) -> Path:
    return Path(output) / CHECKPOINTS / f"step-{step:08d}"


def complete_checkpoints(output: Path) -> list[Path]:
    """Finished checkpoint folders, oldest first."""
    root = Path(output) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file())


def latest_checkpoint(output: Path) -> Path | None:
    found = complete_checkpoints(output)
    return found[-1] if found else None


def _ema_file(accelerator) -> str | None:
    """This process's EMA file: one shared file, or one per process when FSDP shards the weights."""
    if accelerator.distributed_type.name == "FSDP":
        return f"ema-rank{accelerator.process_index:03d}.safetensors"
    return EMA_FILE if accelerator.is_main_process else None


def save_checkpoint(accelerator, output: Path, state: TrainerState, ema: DecoderEMA | None, scheduler, keep_last: int) -> Path:
    """Every process calls this (FSDP gathers inside ``save_state``); the main one writes the JSON."""
    path = checkpoint_dir(output, state.step)
    accelerator.save_state(str(path))
    if ema is not None and _ema_file(accelerator):
        shards = {k: _local(v).detach().cpu().contiguous() for k, v in ema.shadow.items()}
        save_file(shards, str(path / _ema_file(accelerator)))
    accelerator.wait_for_everyone()  # every EMA shard is written before the marker
    if accelerator.is_main_process:
        state.ema_updates = ema.updates if ema is not None else 0
        (path / SCHEDULER_FILE).write_text(json.dumps(_scheduler_state(scheduler)))
        (path / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
        for old in complete_checkpoints(output)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def load_checkpoint(accelerator, path: Path, stage: str, ema: DecoderEMA | None, scheduler) -> TrainerState:
    """Restore model, optimizer, RNG (accelerate), EMA and scheduler; returns the progress."""
    path = Path(path)
    try:
        payload = json.loads((path / STATE_FILE).read_text())
        state = TrainerState(**payload)
    except (OSError, ValueError, TypeError) as error:
        raise TrainingError(f"{path}: unreadable {STATE_FILE} ({error})") from error
    if state.stage != stage:
        raise TrainingError(f"{path} is a checkpoint of stage {state.stage!r}, this run is stage {stage!r}")
    accelerator.load_state(str(path))
    if ema is not None:
        name = _ema_file(accelerator) or EMA_FILE
        if not (path / name).is_file():
            raise TrainingError(f"{path}: no {name}, but EMA is enabled in this run")
        shadow = {k: _like(ema.shadow.get(k), v) for k, v in load_file(str(path / name)).items()}
        ema.load_state_dict({"decay": ema.decay, "updates": state.ema_updates, "shadow": shadow})
    scheduler.load_state_dict(json.loads((path / SCHEDULER_FILE).read_text()))
    return state


def _local(tensor):
    """This process's shard of an FSDP2 (DTensor) weight; a plain tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _like(reference, shard):
    """A saved shard as the kind of tensor the EMA holds (a DTensor on the same mesh under FSDP2)."""
    if reference is None or not hasattr(reference, "to_local"):
        return shard
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(shard.to(reference.device), reference.device_mesh, reference.placements,
                              shape=reference.shape, stride=reference.stride())


def _scheduler_state(scheduler) -> dict:
    """The LR scheduler's state as JSON (step counters and learning rates; no code)."""
    try:
        return json.loads(json.dumps(scheduler.state_dict()))
    except TypeError as error:
        raise TrainingError(f"the learning-rate scheduler's state is not JSON ({error})") from error
