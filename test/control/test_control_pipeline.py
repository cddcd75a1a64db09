"""Inference trigger + control loop together, with a simulated inference latency."""

from __future__ import annotations

import numpy as np
from control_testkit import chunk_for, embodiment

from qwen_vla_ros.control import ControlLoop, InferenceTrigger, chunk_play_end

LATENCY = 0.1  # s, five control steps at 50 Hz


def reference(emb, t: float) -> np.ndarray:
    """The motion a perfect policy would predict: slow, inside every limit."""
    return emb.home_position + 0.05 * np.sin(2.0 * t + np.arange(emb.action_dim))


def simulate(strategy: str, ticks: int, actions_per_chunk: int | None = None):
    emb = embodiment("aloha")
    loop = ControlLoop(emb, strategy, actions_per_chunk=actions_per_chunk)
    trigger = InferenceTrigger(strategy, emb.dt, replan_threshold=0.5)
    in_flight: tuple[float, object] | None = None
    last_start = last_end = None
    results = []
    for k in range(ticks):
        now = k * emb.dt
        if in_flight is not None and in_flight[0] <= now + 1e-9:
            chunk = in_flight[1]
            assert loop.add_chunk(chunk, now) == []
            steps = actions_per_chunk or chunk.horizon
            last_start, last_end = (
                chunk.start_time,
                chunk_play_end(chunk.start_time, chunk.horizon, emb.dt, steps),
            )
            in_flight = None
        decision = trigger.decide(
            now,
            last_start=last_start,
            last_end=last_end,
            in_flight=in_flight is not None,
            latency_s=LATENCY,
        )
        if decision.request:  # observe now; the chunk is stamped with the observation time
            actions = np.stack([reference(emb, now + i * emb.dt) for i in range(emb.chunk_horizon)])
            in_flight = (now + LATENCY, chunk_for(emb, actions, start=now, chunk_id=k))
        results.append((now, loop.tick(now, reference(emb, now))))
    return emb, results


def test_async_never_starves_and_follows_the_trajectory_despite_latency():
    emb, results = simulate("async", 300)
    running = [(t, r) for t, r in results if t >= LATENCY - 1e-9]
    assert all(r.mode == "run" for _, r in running)
    # Stale steps are skipped, so the command matches the trajectory at the current time.
    worst = max(np.abs(r.command - reference(emb, t)).max() for t, r in running)
    assert worst < 1e-9


def test_synchronous_pauses_one_latency_per_chunk():
    _, results = simulate("synchronous", 300, actions_per_chunk=25)
    modes = "".join("r" if r.mode == "run" else "h" for _, r in results)
    pauses = [len(p) for p in modes.strip("h").split("r") if p]
    assert pauses and set(pauses) == {5}  # a 0.1 s inference at 50 Hz, every chunk
    assert all(r.cause == "starved" for _, r in results[6:] if r.mode == "hold")


def test_temporal_ensemble_of_consistent_predictions_is_the_trajectory():
    # One request in flight at a time: a new chunk every 5 ticks, up to 10 overlap.
    emb, results = simulate("temporal_ensemble", 120)
    running = [(t, r) for t, r in results if t >= LATENCY - 1e-9]
    assert all(r.mode == "run" for _, r in running)
    assert max(np.abs(r.command - reference(emb, t)).max() for t, r in running) < 1e-9
