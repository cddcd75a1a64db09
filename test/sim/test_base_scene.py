"""MobileBaseSim: front camera from the base pose, goal region, footprint collisions."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.sim import MobileBaseSim, Obstacle, SimCamera


@pytest.fixture(scope="module")
def world():
    sim = MobileBaseSim(goal_xy=(2.0, 0.0), goal_radius=0.3,
                        cameras={"front": SimCamera("front", 48, 64)})
    yield sim
    sim.close()


def test_driving_to_the_goal_succeeds(world):
    world.reset()
    assert not world.success()
    for _ in range(60):  # 6 s at 10 Hz
        if world.success():
            break
        world.set_cmd_vel(0.5, 0.0)
        world.step(0.1)
    assert world.success() and world.distance_to_goal() <= 0.3
    assert not world.in_collision()


def test_front_camera_renders_from_the_base_pose(world, gl_available):
    world.reset()
    at_start = world.render("front")
    assert at_start.shape == (48, 64, 3) and at_start.dtype == np.uint8
    assert at_start.std() > 5.0
    world.reset((0.0, 0.0, np.pi / 2))  # turned to face +y
    turned = world.render("front")
    assert np.abs(turned.astype(int) - at_start.astype(int)).mean() > 2.0
    world.reset()
    np.testing.assert_array_equal(world.render("front"), at_start)


def test_footprint_collision_with_a_box():
    sim = MobileBaseSim(obstacles=[Obstacle("box", 1.0, 0.0, 0.2)], cameras={})
    assert not sim.in_collision()
    sim.reset((0.6, 0.0, 0.0))  # 0.2 m from the box face: inside the 0.25 m radius
    assert sim.in_collision()


def test_from_embodiment_uses_its_camera_size(gl_available):
    emb = load_embodiment("mobile_base")
    sim = MobileBaseSim.from_embodiment(emb)
    assert sim.camera_names == ["front"]
    assert sim.render("front").shape[:2] == tuple(emb.cameras[0].image_size)
    sim.close()
