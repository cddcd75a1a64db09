"""Memory and time of fine-tuning steps: full SFT, LoRA, decoder only (prints figures; asserts nothing).

    python bench/bench_finetune.py --backbone qwen3_5-4b-shape --preset paper [--batch 16] [--steps 3]
    python bench/bench_finetune.py --backbone tiny --preset tiny --batch 2 --steps 2     # any machine

Builds a random policy in memory (the 4B-shaped backbone from its config: no download,
``model/reference_shapes.py``), applies each variant's settings exactly as ``qwen-vla train``
does (``trainer.prepare_policy_for_training``), and runs ``--steps`` AdamW steps on synthetic
``aloha_sim`` batches (3 cameras 224x224, horizon 50) under bf16 autocast on CUDA. For each
variant it prints seconds per step (median, after the first), the measured peak
(``torch.cuda.max_memory_allocated``; on CPU the process RSS high-water mark, which only
grows) and the estimate that training prints (``training/memory.py``). A variant that runs
out of GPU memory is reported as such and the next one runs.

Variants (``--variants``): ``full`` SFT (vision frozen, language model + decoder, gradient
checkpointing), ``full-no-ckpt``, ``lora`` (r16, bf16 frozen weights, checkpointing),
``decoder`` (backbone frozen in bf16).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np
import torch

CHECKPOINTING = {"gradient_checkpointing": {"backbone": True, "decoder": True}}
VARIANTS = {
    "full": CHECKPOINTING,
    "full-no-ckpt": {},
    "lora": {"lora": {"enabled": True}, "frozen_dtype": "bfloat16", **CHECKPOINTING},
    "decoder": {"freeze": "all", "frozen_dtype": "bfloat16"},
}


def synthetic_batch(embodiment, batch: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    images = {c.name: torch.as_tensor(rng.integers(0, 256, (batch, *c.image_size, 3), dtype=np.uint8))
              for c in embodiment.cameras if c.required}
    home = embodiment.home_position
    return {
        "images": images,
        "state": torch.as_tensor(home + rng.normal(0, 0.05, (batch, len(home))), dtype=torch.float32),
        "actions": torch.as_tensor(home + rng.normal(0, 0.05, (batch, embodiment.chunk_horizon, len(home))),
                                   dtype=torch.float32),
        "instructions": ["pick up the cube and hand it to the other arm"] * batch,
        "embodiment": embodiment.name,
    }


def build_policy(backbone: str, preset: str, device: str):
    from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone
    from qwen_vla_ros.model.reference_shapes import reference_backbone

    if backbone == "tiny":
        return QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), preset, seed=0).to(device), NormStats
    with torch.device(device):  # weights created where they live: no 25 GB detour through host memory
        return QwenVLAPolicy.from_backbone(reference_backbone(backbone, device=device, dtype=torch.float32), preset,
                                           seed=0), NormStats


def run_variant(name: str, args, device: str) -> str:
    from qwen_vla_ros.embodiment import load_embodiment
    from qwen_vla_ros.model.inputs import batch_prompts
    from qwen_vla_ros.training.config import load_stage_config
    from qwen_vla_ros.training.freezing import parameter_groups, set_train_mode
    from qwen_vla_ros.training.memory import (
        ActivationShape,
        estimate_training_memory,
        peak_memory_bytes,
    )
    from qwen_vla_ros.training.trainer import prepare_policy_for_training

    config = load_stage_config("sft", {**VARIANTS[name], "batch_size": args.batch})
    embodiment = load_embodiment("aloha_sim")
    policy, norm_stats = build_policy(args.backbone, args.preset, device)
    policy.set_normalization(embodiment.name, norm_stats.from_limits(embodiment))
    prepare_policy_for_training(policy, config)
    optimizer = torch.optim.AdamW(parameter_groups(policy, config.optimizer), betas=config.optimizer.betas)
    batch = synthetic_batch(embodiment, args.batch, 0)
    inputs = policy.backbone.prepare(batch_prompts(batch, [embodiment] * args.batch))  # the estimate's shape
    patches = inputs["pixel_values"].shape[0] // args.batch
    cuda = device == "cuda"
    shape = ActivationShape(batch=args.batch, tokens=int(inputs["input_ids"].shape[1]), vision_patches=patches,
                            horizon=embodiment.chunk_horizon, value_bytes=2 if cuda else 4,
                            decoder_value_bytes=2 if cuda else 4)
    estimate = estimate_training_memory(policy, shape, backbone_checkpointing=config.gradient_checkpointing.backbone,
                                        decoder_checkpointing=config.gradient_checkpointing.decoder)
    set_train_mode(policy, config.freeze, config.text_only)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    try:
        for step in range(args.steps):
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = policy.compute_loss(batch, generator=torch.Generator().manual_seed(step))["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        return f"{name:<13} out of memory (estimate {estimate.total / 2**30:.1f} GiB)"
    peak, source = peak_memory_bytes(torch.device(device))
    per_step = statistics.median(seconds[1:] or seconds)
    return (f"{name:<13} {per_step:6.2f} s/step  peak {peak / 2**30:6.1f} GiB ({source})  estimate "
            f"{estimate.total / 2**30:6.1f} GiB  trained {estimate.trainable / 1e6:,.1f} M  loss {float(loss.detach()):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="qwen3_5-4b-shape", choices=["tiny", "qwen3_5-4b-shape"])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--variants", nargs="+", default=["lora", "full", "decoder"], choices=sorted(VARIANTS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    if device == "cpu" and args.backbone != "tiny":
        print("no CUDA device: fine-tuning the 4B shape needs a GPU (--backbone tiny runs anywhere)")
        return
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{args.backbone} + {args.preset} decoder, batch {args.batch}, {args.steps} AdamW steps on {where}")
    for name in args.variants:
        print(run_variant(name, args, device), flush=True)
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
