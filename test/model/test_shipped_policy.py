"""The shipped demo policy (models/sim_demo): one checkpoint for both simulated robots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model.policy import QwenVLAPolicy
from qwen_vla_ros.model.shipped import SIM_DEMO, SIM_EMBODIMENTS, shipped_model_dir
from qwen_vla_ros.types import Observation


@pytest.fixture(scope="module")
def shipped():
    return shipped_model_dir(SIM_DEMO)


def test_shipped_checkpoint_is_small_and_documents_its_training(shipped):
    size = sum(f.stat().st_size for f in shipped.rglob("*") if f.is_file())
    assert size <= 20 * 1024 * 1024, f"{size / 2**20:.1f} MiB"
    summary = json.loads((shipped / "train_summary.json").read_text())  # the trainer's last phase (3)
    assert summary["stage"] == "cpt" and summary["step"] > 0
    # the learning curve documents every phase; the first trains from a random model
    curve = json.loads((shipped / "learning_curve.json").read_text())
    first = curve["phase1_val_loss_every_500_steps"]
    assert first[0]["step"] == 0 and first[-1]["step"] >= 1000 and first[-1]["val_loss"] < 0.1 * first[0]["val_loss"]
    assert all(key in curve for key in ("phase2_val_loss_every_500_steps", "phase3_val_loss_every_200_steps",
                                        "phase4_refit_validation_every_500_steps"))
    # phase 4 refit the key-pose head: its held-out grasp error fell
    refit = json.loads((shipped / "refit_summary.json").read_text())
    before, after = refit["validation_before"]["pick_color"], refit["validation_during"][-1]["pick_color"]
    assert after["error_m_median"] < before["error_m_median"]
    assert (shipped / "normalization.json").is_file()


@pytest.mark.parametrize("embodiment_name", SIM_EMBODIMENTS)
def test_one_set_of_weights_serves_both_simulated_robots(shipped, embodiment_name):
    policy = QwenVLAPolicy.from_pretrained(shipped).eval()
    embodiment = load_embodiment(embodiment_name)
    rng = np.random.default_rng(0)
    images = {c.name: rng.integers(0, 255, (*c.image_size, 3), dtype=np.uint8) for c in embodiment.cameras}
    observation = Observation(images=images, state=embodiment.home_position.copy(),
                              instruction="pick up the red cube", stamp=0.0)
    chunk = policy.predict_chunk(observation, embodiment, seed=0)
    assert chunk.actions.shape == (embodiment.chunk_horizon, embodiment.action_dim)
    assert np.all(np.isfinite(chunk.actions))


#: Held-out seeds (>= 100000, never in a demonstration) on which the shipped policy (phase 4)
#: lifted the named cube (a finger on it, its centre 7 cm high) both in `sim_rollouts` with the
#: key-frame grasp (aloha_rollouts' default, as the inference node's; 41 of the first 60 seeds
#: lifted, deterministic on one machine) and in the 50-episode run through the ROS graph
#: (`qwen-vla eval`, 38/50), 2026-12-02: the first 8 of the 28 such seeds.
#: Other CPUs round differently and a grasp is a contact-rich event (28 of the 41 in-process
#: successes lifted in the graph too), so the test asks for 3 of 8.
LIFTED_WHEN_SHIPPED = (100000, 100001, 100004, 100006, 100007, 100009, 100011, 100015)


def test_the_shipped_policy_lifts_the_named_cube_in_closed_loop(shipped):
    """Issue 9's acceptance in the test suite: the shipped checkpoint succeeds at pick_color in the
    simulator (the ROS graph's rate is measured by `qwen-vla eval`, README): the named cube lifted
    (the task's success, as the eval scores it) without touching another."""
    from qwen_vla_ros.sim_rollouts import aloha_rollouts

    policy = QwenVLAPolicy.from_pretrained(shipped).eval()
    results = aloha_rollouts(policy, "pick_color", LIFTED_WHEN_SHIPPED)
    assert not any(r.wrong_object for r in results)
    assert sum(r.success for r in results) >= 3, [
        (r.seed, r.instruction, r.best_reward) for r in results
    ]
