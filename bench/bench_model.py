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
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import NormStats, QwenVLAPolicy, count_parameters, tiny_backbone
from qwen_vla_ros.model.flow import euler_sample, padded_noise
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--family", default="qwen3_5", choices=["qwen3_5", "qwen3_vl", "qwen2_5_vl"]
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on shared cores)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
