"""The shipped FSDP configuration, run on two CPU processes (gloo) through `accelerate launch`.

accelerate builds FSDP only on accelerator devices; the trainer switches a CPU process
group to accelerate's FSDP2 path itself (``trainer.shard_cpu_processes``), so this runs the
same sharding, sharded checkpoints and gathered export as on GPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model.policy import QwenVLAPolicy
from qwen_vla_ros.types import Observation

REPO = Path(__file__).resolve().parents[2]


def _cpu_config(tmp_path: Path) -> Path:
    """config/accelerate/fsdp.yaml with only the device settings changed (2 CPU processes)."""
    settings = yaml.safe_load((REPO / "config/accelerate/fsdp.yaml").read_text())
    settings.update(num_processes=2, mixed_precision="no", use_cpu=True)
    path = tmp_path / "fsdp_cpu.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(tmp_path, embodiment_files, datasets, output, *extra):
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    command = [
        accelerate, "launch", "--config_file", str(_cpu_config(tmp_path)),
        "--main_process_port", str(_free_port()), "-m", "qwen_vla_ros.training.cli",
        "--stage", "sft", "--dataset", datasets["aloha_small"], "--embodiment", embodiment_files["aloha_small"],
        "--init", "tiny", "--output", str(output), "--batch-size", "2",
        "--set", "eval.max_batches=1", "--set", "schedule.warmup_steps=0", "--no-progress", *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads((output / "train_summary.json").read_text())


def _predicts(folder, embodiment_file):
    policy = QwenVLAPolicy.from_pretrained(folder)
    embodiment = load_embodiment(embodiment_file)
    images = {c.name: np.zeros((*c.image_size, 3), np.uint8) for c in embodiment.cameras}
    chunk = policy.predict_chunk(Observation(images, embodiment.home_position, "reach the red marker"), embodiment)
    assert chunk.actions.shape == (8, 14) and np.all(np.isfinite(chunk.actions))


def test_fsdp_shards_trains_checkpoints_resumes_and_exports(tmp_path, embodiment_files, datasets):
    output = tmp_path / "fsdp"
    done, summary = _launch(tmp_path, embodiment_files, datasets, output, "--max-steps", "2")
    assert (summary["processes"], summary["step"], summary["samples_per_step"]) == (2, 2, 4)
    checkpoint = output / "checkpoints" / "step-00000002"
    # sharded state: one model and optimizer shard and one EMA shard per process
    assert sorted(p.name for p in (checkpoint / "pytorch_model_fsdp_0").glob("*.distcp")) == ["__0_0.distcp",
                                                                                              "__1_0.distcp"]
    assert (checkpoint / "ema-rank000.safetensors").is_file() and (checkpoint / "ema-rank001.safetensors").is_file()
    _predicts(output / "final", embodiment_files["aloha_small"])
    done, summary = _launch(tmp_path, embodiment_files, datasets, output, "--max-steps", "3", "--resume")
    assert "resumed from" in done.stdout and (summary["start_step"], summary["step"]) == (2, 3)


def test_fsdp_with_lora_bf16_frozen_weights_and_checkpointing_exports_a_merged_policy(tmp_path, embodiment_files,
                                                                                      datasets):
    output = tmp_path / "fsdp_lora"
    _, summary = _launch(tmp_path, embodiment_files, datasets, output, "--max-steps", "2",
                         "--set", "lora.enabled=true", "--set", "lora.rank=4", "--set", "frozen_dtype=bfloat16",
                         "--set", "gradient_checkpointing.backbone=true", "--set", "gradient_checkpointing.decoder=true")
    assert summary["step"] == 2 and summary["memory_estimate"]["trainable"] < summary["memory_estimate"][
        "total_parameters"]
    assert not any(".lora_" in key for key in QwenVLAPolicy.from_pretrained(output / "final").state_dict())
    _predicts(output / "final", embodiment_files["aloha_small"])


def test_fsdp1_on_cpu_processes_is_refused_with_a_reason(monkeypatch):
    from types import SimpleNamespace

    from qwen_vla_ros.training.errors import TrainingError
    from qwen_vla_ros.training.trainer import shard_cpu_processes

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    state = SimpleNamespace()
    with pytest.raises(TrainingError, match="fsdp_version: 2"):
        shard_cpu_processes(SimpleNamespace(state=state))
    assert not hasattr(state, "distributed_type")  # nothing switched
