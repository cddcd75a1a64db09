"""Gripper unit conversion (pure) and the staged task rewards (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.sim import GripperConversion
from qwen_vla_ros.sim.aloha_tasks import (
    LEFT_FINGER_GEOM,
    LIFTED_Z_M,
    RIGHT_FINGER_GEOM,
    cube_body,
    cube_geom,
    insertion_reward,
    nearest_approached,
    pick_color_reward,
    transfer_cube_reward,
)


def pairs(*names: tuple[str, str]) -> set[frozenset[str]]:
    return {frozenset(p) for p in names}


def test_gripper_conversion_agrees_with_the_embodiment_formulas():
    embodiment = load_embodiment("aloha")
    group = embodiment.group("left_gripper")
    conversion = GripperConversion.from_calibration(group.gripper)
    for opening in np.linspace(0.0, 1.0, 7):
        command = embodiment.gripper_normalised_to_command(group, opening)
        assert conversion.command_to_opening(command) == pytest.approx(opening)
        assert conversion.opening_to_command(opening) == pytest.approx(command)
        sim_finger = conversion.opening_to_sim_finger(opening)
        rig_finger = conversion.sim_finger_to_rig_finger(sim_finger)
        assert embodiment.gripper_state_to_normalised(group, rig_finger) == pytest.approx(opening)


def test_sim_finger_normalisation_is_gym_alohas():
    from gym_aloha.constants import normalize_puppet_gripper_position

    conversion = GripperConversion()
    for sim_finger in (0.021, 0.03, 0.057):
        assert conversion.sim_finger_to_opening(sim_finger) == pytest.approx(
            normalize_puppet_gripper_position(sim_finger))


def test_velocity_scales_are_the_position_slopes():
    conversion = GripperConversion()
    delta = 1e-4  # m of sim finger travel
    rig = conversion.sim_finger_to_rig_finger
    assert (rig(0.03 + delta) - rig(0.03)) / delta == pytest.approx(conversion.finger_velocity_scale)
    joint = lambda q: conversion.opening_to_command(conversion.sim_finger_to_opening(q))  # noqa: E731
    assert (joint(0.03 + delta) - joint(0.03)) / delta == pytest.approx(
        conversion.gripper_velocity_scale)


def test_transfer_cube_reward_stages():
    assert transfer_cube_reward(pairs(("red_box", "table"))) == 0
    assert transfer_cube_reward(pairs(("red_box", "table"), (RIGHT_FINGER_GEOM, "red_box"))) == 1
    assert transfer_cube_reward(pairs(("red_box", RIGHT_FINGER_GEOM))) == 2
    assert transfer_cube_reward(pairs(("red_box", LEFT_FINGER_GEOM), ("red_box", "table"))) == 3
    assert transfer_cube_reward(pairs(("red_box", LEFT_FINGER_GEOM))) == 4


def test_insertion_reward_stages():
    grasp = (("socket-2", LEFT_FINGER_GEOM), ("red_peg", RIGHT_FINGER_GEOM))
    assert insertion_reward(pairs(("red_peg", "table"))) == 0
    assert insertion_reward(pairs(*grasp, ("red_peg", "table"))) == 1
    assert insertion_reward(pairs(*grasp)) == 2
    assert insertion_reward(pairs(*grasp, ("socket-3", "red_peg"))) == 3
    assert insertion_reward(pairs(("pin", "red_peg"), ("socket-1", "table"))) == 4


def test_pick_color_counts_a_lift_by_height_not_by_lost_table_contact():
    resting_z, held_z = 0.02, LIFTED_Z_M + 0.01  # m, the cube's centre
    others_down = [(cube_geom(c), "table") for c in ("red", "green")]

    def reward(blue_z, *contacts):
        poses = {cube_body(c): np.array([0.0, 0.0, z]) for c, z in (("red", resting_z), ("green", resting_z), ("blue", blue_z))}
        return pick_color_reward(pairs(*contacts), "blue", poses)

    assert reward(resting_z, ("blue_box", "table"), *others_down) == 0
    assert reward(resting_z, ("blue_box", "table"), ("blue_box", RIGHT_FINGER_GEOM), *others_down) == 1
    # a squeeze at rest that breaks the table contact for a step is not a lift
    assert reward(resting_z, ("blue_box", RIGHT_FINGER_GEOM), *others_down) == 1
    assert reward(held_z, ("blue_box", RIGHT_FINGER_GEOM), *others_down) == 2
    assert reward(held_z, ("blue_box", LEFT_FINGER_GEOM), *others_down) == 2
    assert reward(held_z, *others_down) == 0  # flung up, not held
    assert reward(held_z, ("blue_box", RIGHT_FINGER_GEOM), others_down[0]) == 1  # the green cube is off the table


def test_the_approached_object_is_the_nearest_one_within_reach():
    assert nearest_approached({}) is None  # a task without goals
    assert nearest_approached({"red": 0.30, "blue": 0.25}) is None  # reached for nothing
    assert nearest_approached({"red": 0.06, "green": 0.07, "blue": 0.25}) == "red"
    assert nearest_approached({"red": 0.06, "green": 0.05}, within_m=0.04) is None
