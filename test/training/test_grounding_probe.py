"""`qwen-vla probe`: grounding and key-pose figures on held-out scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone
from qwen_vla_ros.sim import GL_BACKEND
from qwen_vla_ros.training import grounding_probe
from qwen_vla_ros.training.grounding_probe import PROBE_SEEDS, boxes_in_robot_frame, probe

pytestmark = pytest.mark.skipif(GL_BACKEND is None, reason="no offscreen OpenGL backend for MuJoCo")


class _World:
    """A base at (1, 2) m facing +y, boxes ahead of it and to its right."""

    pose = (1.0, 2.0, math.pi / 2)
    goals = ("red", "blue")
    centres = {"red": (1.0, 3.5, 0.2), "blue": (2.0, 2.0, 0.2)}

    def box_centre(self, colour):
        return self.centres[colour]


def test_boxes_are_given_in_the_frame_of_the_base():
    boxes = boxes_in_robot_frame(_World())
    np.testing.assert_allclose(boxes["red"], [1.5, 0.0], atol=1e-12)  # straight ahead
    np.testing.assert_allclose(boxes["blue"], [0.0, -1.0], atol=1e-12)  # on its right


def _tiny_policy(embodiment):
    policy = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), "tiny", seed=0)
    policy.set_normalization(embodiment.name, NormStats.from_limits(embodiment))
    policy.add_grounding_pointer()
    policy.add_subgoal_head()
    return policy.eval()


def _oracle(seen: list):
    def predicted(policy, scenes, embodiment):
        seen.extend(s.seed for s in scenes)
        return np.stack([s.key_pose for s in scenes])
    return predicted


def test_an_oracle_key_pose_stops_beside_every_named_box(monkeypatch):
    """The scoring itself: a head that predicts each scene's true key pose (the expert's stop)
    stops nearest the named box in every held-out scene, with no error."""
    base, seen = load_embodiment("mobile_base"), []
    monkeypatch.setattr(grounding_probe, "predicted_key_poses", _oracle(seen))
    report = probe(_tiny_policy(base), base, "drive_to_color", scenes=5, approach_fraction=0.5, batch_size=2)
    assert report["stop_nearest_named_box"] == 5
    assert report["stop_error_m_median"] == 0.0 and report["key_pose_error_median"] == 0.0
    assert all(PROBE_SEEDS[0] <= seed < PROBE_SEEDS[1] for seed in seen)  # evaluation seeds only
    assert 0.0 <= report["pointer_hit"] <= report["pointer_near"] <= 1.0


def test_an_oracle_key_pose_grasps_at_the_named_cube(monkeypatch):
    """The expert's own key pose puts the grasping arm's tool centre point at the named cube
    (a few cm: the fingers close around it) and moves that arm, not the other."""
    aloha = load_embodiment("aloha_sim")
    monkeypatch.setattr(grounding_probe, "predicted_key_poses", _oracle([]))
    report = probe(_tiny_policy(aloha), aloha, "pick_color", scenes=4, batch_size=2)
    assert report["grasp_tcp_to_expert_m_median"] == 0.0 and report["grasping_arm_nearest"] == 4
    assert report["grasp_tcp_to_object_m_median"] < 0.03, report


def test_an_untrained_policy_is_scored_on_the_same_figures():
    aloha = load_embodiment("aloha_sim")
    report = probe(_tiny_policy(aloha), aloha, "pick_color", scenes=3, batch_size=2)
    assert report["scenes"] == 3 and "stop_nearest_named_box" not in report
    assert report["key_pose_error_median"] > 0 and report["grasp_tcp_to_expert_m_median"] > 0.01  # not the expert's grasp
    assert 0.0 <= report["pointer_hit"] <= 1.0
