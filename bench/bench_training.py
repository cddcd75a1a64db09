"""Training throughput of the tiny policy per stage (prints figures; asserts nothing).

    python bench/bench_training.py [--steps 20] [--image-size 224] [--batch-size 8] [--threads 1]

Builds a synthetic ALOHA dataset (the aloha_sim cameras at --image-size), then trains the
tiny policy for --steps optimizer steps in each stage and prints steps/s and samples/s
(evaluation made rare; the one checkpoint written at the last step is included in the time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from qwen_vla_ros.data.synthetic import write_synthetic_dataset
    from qwen_vla_ros.embodiment import load_embodiment
    from qwen_vla_ros.training.config import load_stage_config
    from qwen_vla_ros.training.trainer import train

    root = Path(tempfile.mkdtemp(prefix="bench_training_"))
    size = args.image_size
    cameras = "\n".join(
        f"  - {{name: {name}, topic: /{name}/image, image_size: [{size}, {size}], required: true}}"
        for name in ("cam_high", "cam_left_wrist", "cam_right_wrist")
    )
    (root / "emb.yaml").write_text(f"extends: aloha_sim\nname: aloha_bench\ncameras:\n{cameras}\n")
    embodiment = load_embodiment(root / "emb.yaml")
    started = time.perf_counter()
    write_synthetic_dataset(root / "data", embodiment, episodes=6, episode_length=60, seed=0)
    print(f"dataset: 6 episodes x 60 frames, 3 cameras {size}x{size}: {time.perf_counter() - started:.1f} s")
    print(f"{'stage':<6} {'trainable':>10} {'steps/s':>8} {'samples/s':>10}  (batch {args.batch_size}, "
          f"{args.threads} thread(s), horizon {embodiment.chunk_horizon}, {args.steps} steps)")
    for stage in ("t2a", "sft", "cpt"):
        config = load_stage_config(stage, {
            "embodiment": str(root / "emb.yaml"), "datasets": [{"path": str(root / "data")}],
            "batch_size": args.batch_size, "max_steps": args.steps, "log_every": args.steps,
            "eval": {"every_steps": 10**6, "max_batches": 1}, "checkpoint": {"every_steps": 10**6},
        })
        summary = train(config, "tiny", root / f"run_{stage}", progress=False)
        trainable = summary.parameters["decoder_trainable"] + summary.parameters["backbone_trainable"]
        print(f"{stage:<6} {trainable:>10,} {summary.steps_per_s:>8.2f} {summary.steps_per_s * args.batch_size:>10.1f}")


if __name__ == "__main__":
    main()
