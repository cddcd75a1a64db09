"""The same entry point in two CPU processes (DDP, gloo) through `accelerate launch`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model.policy import QwenVLAPolicy
from qwen_vla_ros.types import Observation

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accelerate() -> str:
    return shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")


def test_two_gloo_processes_train_one_model(tmp_path, embodiment_files, datasets):
    output = tmp_path / "ddp"
    command = [
        _accelerate(), "launch", "--config_file", str(REPO / "config/accelerate/ddp_cpu.yaml"),
        "--num_processes", "2", "--main_process_port", str(_free_port()),
        "-m", "qwen_vla_ros.training.cli",
        "--stage", "sft", "--dataset", datasets["aloha_small"], "--embodiment", embodiment_files["aloha_small"],
        "--init", "tiny", "--output", str(output), "--max-steps", "2", "--batch-size", "2",
        "--set", "eval.max_batches=1", "--set", "schedule.warmup_steps=0", "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["step"] == 2
    assert summary["samples_per_step"] == 4  # 2 per process
    assert done.stdout.count("training summary") == 1  # printed by the main process only
    policy = QwenVLAPolicy.from_pretrained(output / "final")
    embodiment = load_embodiment(embodiment_files["aloha_small"])
    images = {c.name: np.zeros((*c.image_size, 3), np.uint8) for c in embodiment.cameras}
    chunk = policy.predict_chunk(Observation(images, embodiment.home_position, "reach the red marker"), embodiment)
    assert chunk.actions.shape == (8, 14)
