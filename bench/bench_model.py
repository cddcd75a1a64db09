"""Latency and memory of one action chunk, and what caching the backbone features saves.

Run:  python bench/bench_model.py [--presets tiny small] [--device auto|cpu|cuda]
                                  [--family qwen3_5] [--runs 20] [--steps 10] [--threads 1]

For each decoder preset on each device (CPU always; CUDA when present and --device
allows) it builds an untrained policy on a tiny offline backbone (no downloads),
feeds the ``aloha_sim`` embodiment's three 224x224 cameras, and prints:

* median and p90 seconds per chunk, split into preprocess (checks, normalisation,
  image processor, tokenizer), backbone (one forward) and decoder (all Euler steps);
* peak memory: process RSS high-water mark on CPU (psutil / getrusage, MiB), and
  ``torch.cuda.max_memory_allocated`` on GPU (MiB);
* the speed-up of the real sampler (backbone once, features cached across the Euler
  loop) over a naive sampler that re-runs the backbone at every denoising step.

The backbone is the tiny random model, so these figures measure the package's
overheads and the decoder; a real Qwen3.5-4B backbone dominates on real hardware.
The CPU run with the defaults takes about a minute on 2 cores.

Paper scale:  python bench/bench_model.py --backbone qwen3_5-4b-shape --preset paper
                  [--paths eager fast] [--steps 10 4] [--batch 1 8] [--runs 20]

builds a random backbone of Qwen3.5-4B's published shape from its config (no download;
``model/reference_shapes.py``) and the decoder preset. It always prints the parameter
counts (on the ``meta`` device: nothing allocated) and the training-memory estimates of
the SFT variants at batch 16 (``training/memory.py``). On a CUDA device it then times one
chunk per (path, Euler steps, batch): ``eager`` is the package's plain path (bf16
backbone, fp32 decoder), ``fast`` the fast path (``model/fast_path.py``: compiled Euler
loop under CUDA graphs, bf16 decoder, compiled bucketed backbone), with the cold start
(enabling the path and the warm-up chunk, which compiles) and the first chunk after it.
Without CUDA it says that the timing needs a GPU. ``--backbone tiny`` runs the same table
on the tiny backbone on any device (on CPU the fast path compiles only the Euler loop).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import NormStats, QwenVLAPolicy, count_parameters, dit_preset, tiny_backbone
from qwen_vla_ros.model.flow import euler_sample, padded_noise
from qwen_vla_ros.model.reference_shapes import SHAPES
from qwen_vla_ros.types import Observation

EMBODIMENT = "aloha_sim"


def build_policy(preset: str, family: str, device: str) -> QwenVLAPolicy:
    policy = QwenVLAPolicy.from_backbone(tiny_backbone(family, seed=0), preset, seed=0)
    embodiment = load_embodiment(EMBODIMENT)
    policy.set_normalization(embodiment.name, NormStats.from_limits(embodiment))
    return policy.to(device).eval()


def observation(seed: int) -> Observation:
    embodiment = load_embodiment(EMBODIMENT)
    rng = np.random.default_rng(seed)
    images = {
        c.name: rng.integers(0, 256, (*c.image_size, 3), dtype=np.uint8) for c in embodiment.cameras
    }
    return Observation(images=images, state=embodiment.home_position, instruction="insert the peg")


def naive_chunk(policy: QwenVLAPolicy, obs: Observation, steps: int, seed: int) -> float:
    """Seconds for one chunk when every Euler step re-runs the backbone (what caching avoids)."""
    start = time.perf_counter()
    prepared = policy.prepare_observations([obs], EMBODIMENT)
    horizon = prepared.embodiment.chunk_horizon

    def velocity(sample, flow_time):
        features = policy.backbone(prepared.inputs)
        return policy.decoder(
            sample, flow_time, prepared.state, prepared.dim_mask, features.features, features.mask
        )

    generator = torch.Generator(policy.device).manual_seed(seed)
    shape = (1, horizon, policy.max_action_dim)
    with torch.inference_mode():
        noise = padded_noise(shape, prepared.dim_mask, generator, policy.device, torch.float32)
        euler_sample(velocity, noise, steps)
    synchronise(policy.device)
    return time.perf_counter() - start


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux: the process high-water mark so far (monotonic).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(preset: str, family: str, device: str, runs: int, steps: int) -> dict:
    policy = build_policy(preset, family, device)
    if policy.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(policy.device)
    obs = [observation(seed) for seed in range(runs)]
    for warm in obs[:2]:
        policy.predict_chunk(warm, EMBODIMENT, seed=0, num_steps=steps)
    phases = {"preprocess": [], "backbone": [], "decoder": [], "total": []}
    for i, o in enumerate(obs):
        start = time.perf_counter()
        chunk = policy.predict_chunk(o, EMBODIMENT, seed=i, num_steps=steps)
        phases["total"].append(time.perf_counter() - start)
        for phase in ("preprocess", "backbone", "decoder"):
            phases[phase].append(chunk.timings[phase])
    naive = [naive_chunk(policy, o, steps, i) for i, o in enumerate(obs[: max(3, runs // 4)])]
    return {
        "preset": preset,
        "device": policy.device.type,
        "params": count_parameters(policy.config.decoder),
        "phases": phases,
        "memory": peak_memory_mib(policy.device),
        "speedup": statistics.median(naive) / statistics.median(phases["total"]),
    }


def median_p90(values: list[float]) -> str:
    """'median / p90' in ms."""
    return f"{1000 * np.median(values):6.1f} /{1000 * np.quantile(values, 0.9):6.1f}"


def print_table(rows: list[dict], steps: int) -> None:
    phases = ("preprocess", "backbone", "decoder", "total")
    print(f"\nOne chunk of {EMBODIMENT} (3 cameras 224x224, horizon 50), {steps} Euler steps.")
    print("Latency in ms as median / p90.")
    header = ["preset", "device", "decoder", *phases, "peak MiB", "vs naive"]
    widths = [7, 6, 9, 15, 15, 15, 15, 9, 9]
    print(" ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        cells = [
            row["preset"],
            row["device"],
            f"{row['params'] / 1e6:.2f} M",
            *(median_p90(row["phases"][p]) for p in phases),
            f"{row['memory']:.0f}",
            f"{row['speedup']:.1f}x",
        ]
        print(" ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    print("peak MiB: process RSS high-water mark (CPU) or torch.cuda.max_memory_allocated (CUDA).")
    print(
        "vs naive: chunk time with the backbone re-run at every Euler step / with cached features."
    )


# -- paper scale: parameter counts, memory estimates, eager vs fast path --------------------
def paper_policy(backbone: str, preset: str, device: str) -> QwenVLAPolicy:
    """A random policy: the named backbone shape in bf16 (the tiny one in fp32), decoder fp32."""
    embodiment = load_embodiment(EMBODIMENT)
    if backbone == "tiny":
        policy = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), preset, seed=0).to(device)
    else:
        from qwen_vla_ros.model.reference_shapes import reference_backbone

        with torch.device(device):
            policy = QwenVLAPolicy.from_backbone(reference_backbone(backbone, device=device), preset, seed=0)
    policy.set_normalization(embodiment.name, NormStats.from_limits(embodiment))
    return policy.eval()


def print_counts_and_memory(backbone: str, preset: str) -> None:
    """Parameter counts and SFT memory estimates (batch 16), all on the meta device."""
    from qwen_vla_ros.model.reference_shapes import count_backbone_parameters, reference_backbone
    from qwen_vla_ros.training.config import load_stage_config
    from qwen_vla_ros.training.memory import ActivationShape, estimate_training_memory
    from qwen_vla_ros.training.trainer import prepare_policy_for_training

    counts = count_backbone_parameters(backbone)
    print(f"\n{backbone}: {counts['total'] / 1e9:.3f} B parameters (language model "
          f"{counts['language_model'] / 1e9:.3f} B, vision {counts['vision'] / 1e9:.3f} B, "
          f"output head {counts['lm_head'] / 1e9:.3f} B); decoder {preset}: "
          f"{count_parameters(dit_preset(preset, cond_dim=2560)) / 1e9:.3f} B")
    embodiment = load_embodiment(EMBODIMENT)
    patches = sum((c.image_size[0] // 16) * (c.image_size[1] // 16) for c in embodiment.cameras if c.required)
    shape = ActivationShape(batch=16, tokens=301, vision_patches=patches, horizon=embodiment.chunk_horizon,
                            value_bytes=2, decoder_value_bytes=2)
    checkpointing = {"gradient_checkpointing": {"backbone": True, "decoder": True}}
    variants = {
        "sft (vision frozen), fp32 weights": {},
        "sft + gradient checkpointing": checkpointing,
        "sft LoRA r16, bf16 frozen weights, checkpointing": {"lora": {"enabled": True},
                                                             "frozen_dtype": "bfloat16", **checkpointing},
        "decoder only, bf16 backbone": {"freeze": "all", "frozen_dtype": "bfloat16"},
    }
    print(f"training memory estimates, batch {shape.batch}, {shape.tokens} tokens, bf16 autocast, AdamW "
          "(a rule of thumb, see training/memory.py; not measured):")
    for name, overrides in variants.items():
        config = load_stage_config("sft", overrides)
        with torch.device("meta"):
            policy = QwenVLAPolicy.from_backbone(reference_backbone(backbone, device="meta", dtype=torch.float32),
                                                 preset)
        prepare_policy_for_training(policy, config)
        estimate = estimate_training_memory(policy, shape, backbone_checkpointing=config.gradient_checkpointing.backbone,
                                            decoder_checkpointing=config.gradient_checkpointing.decoder)
        print(f"  {name:<50} {estimate.total / 2**30:6.1f} GiB  ({estimate.to_text().split(': ', 1)[1]})")


def time_path(policy: QwenVLAPolicy, batch: int, steps: int, runs: int) -> dict[str, list[float]]:
    phases = {"preprocess": [], "backbone": [], "decoder": [], "total": []}
    for i in range(runs):
        observations = [observation(i * batch + k) for k in range(batch)]
        start = time.perf_counter()
        chunk = policy.predict_chunks(observations, EMBODIMENT, seed=i, num_steps=steps)[0]
        phases["total"].append(time.perf_counter() - start)
        for phase in ("preprocess", "backbone", "decoder"):
            phases[phase].append(chunk.timings[phase])
    return phases


def run_paths(args) -> None:
    """Counts, memory estimates, then (on CUDA, or for the tiny backbone) the timing table."""
    if args.backbone != "tiny":
        print_counts_and_memory(args.backbone, args.preset)
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    if device == "cpu" and args.backbone != "tiny":
        print("\nno CUDA device: the chunk timing of this shape needs a GPU (rerun there; "
              "--backbone tiny times the same paths on this machine)")
        return
    steps_list, rows = args.steps or [10, 4], []
    policy = paper_policy(args.backbone, args.preset, device)
    for path in args.paths:
        cold = first = None
        if path == "fast":
            synchronise(policy.device)
            start = time.perf_counter()
            policy.enable_fast_inference(compile=True)
            for batch in args.batch:  # every shape the table uses is compiled before timing
                for steps in steps_list:
                    policy.warm_up(EMBODIMENT, num_steps=steps, batch_size=batch)
            cold = time.perf_counter() - start
            first = time_path(policy, 1, steps_list[0], 1)["total"][0]
        for steps in steps_list:
            for batch in args.batch:
                if policy.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(policy.device)
                if path == "eager":
                    time_path(policy, batch, steps, 2)  # allocator and kernels warm
                phases = time_path(policy, batch, steps, args.runs)
                rows.append({"path": path, "steps": steps, "batch": batch, "phases": phases,
                             "memory": peak_memory_mib(policy.device), "cold": cold, "first": first})
    print(f"\n{args.backbone} + {args.preset} decoder on {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}, "
          f"{EMBODIMENT} (3 cameras 224x224, horizon 50); ms as median / p90")
    header = ("path", "steps", "batch", "preprocess", "backbone", "decoder", "chunk", "peak MiB")
    print(" ".join(h.rjust(w) for h, w in zip(header, (6, 5, 5, 15, 15, 15, 15, 9), strict=True)))
    for row in rows:
        cells = (row["path"], str(row["steps"]), str(row["batch"]),
                 *(median_p90(row["phases"][p]) for p in ("preprocess", "backbone", "decoder", "total")),
                 f"{row['memory']:.0f}")
        print(" ".join(c.rjust(w) for c, w in zip(cells, (6, 5, 5, 15, 15, 15, 15, 9), strict=True)))
    fast = next((r for r in rows if r["path"] == "fast"), None)
    if fast is not None:
        steady = np.median(fast["phases"]["total"])
        print(f"fast path: cold start (enable + warm-up chunks, compiling) {fast['cold']:.1f} s; first chunk "
              f"after it {1000 * fast['first']:.1f} ms = {fast['first'] / steady:.2f} x the steady median")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=None, choices=["tiny", *SHAPES],
                        help="paths table for this backbone (paper scale: qwen3_5-4b-shape)")
    parser.add_argument("--preset", default="paper", help="decoder preset with --backbone")
    parser.add_argument("--paths", nargs="+", default=["eager", "fast"], choices=["eager", "fast"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--family", default="qwen3_5", choices=["qwen3_5", "qwen3_vl", "qwen2_5_vl"]
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help="Euler steps (default 10; with --backbone: 10 4)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on shared cores)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.backbone is not None:
        run_paths(args)
        return
    args.steps = (args.steps or [10])[0]
    devices = ["cpu"] if args.device in ("auto", "cpu") else []
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append("cuda")
    rows = []
    for device in devices:
        for preset in args.presets:
            runs = args.runs if device == "cuda" or preset == "tiny" else max(5, args.runs // 2)
            rows.append(bench(preset, args.family, device, runs, args.steps))
    print_table(rows, args.steps)


if __name__ == "__main__":
    main()
