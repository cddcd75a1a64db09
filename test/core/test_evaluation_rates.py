"""Success rates with Wilson intervals, per instruction and for paired instructions."""

from __future__ import annotations

import pytest

from qwen_vla_ros.evaluation import paired_report, rate, task_report, wilson_interval


def test_wilson_interval_matches_the_reference_values():
    low, high = wilson_interval(40, 50)  # 80% of 50: about 67% to 89% (shared/reference/learning.md)
    assert low == pytest.approx(0.670, abs=0.002) and high == pytest.approx(0.888, abs=0.002)
    assert wilson_interval(0, 10)[0] == 0.0 and 0.0 < wilson_interval(0, 10)[1] < 0.35
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] > 0.65
    assert wilson_interval(0, 0) == (0.0, 1.0)


def episode(seed, goal, success, instruction, wrong=False, approached=None):
    return {"seed": seed, "goal": goal, "success": success, "instruction": instruction, "wrong_object": wrong,
            "approached": approached}


def test_task_report_groups_by_instruction():
    episodes = [episode(1, "red", True, "pick up the red cube"), episode(2, "red", False, "pick up the red cube", True),
                episode(3, "blue", True, "lift the blue block")]
    report = task_report(episodes)
    assert report["success"]["successes"] == 2 and report["success"]["episodes"] == 3
    assert report["wrong_object"]["rate"] == pytest.approx(1 / 3)
    assert report["per_instruction"]["pick up the red cube"]["success"]["rate"] == 0.5
    assert rate([])["episodes"] == 0


def test_paired_report_counts_pairs_that_followed_both_instructions():
    episodes = [episode(7, "red", True, "a"), episode(7, "green", True, "b"),
                episode(8, "blue", True, "c"), episode(8, "red", False, "d", wrong=True),
                episode(9, "red", True, "e")]  # unpaired: left out
    report = paired_report(episodes)
    assert report["pairs"] == 2
    assert report["both_instructions_followed"]["successes"] == 1
    assert report["instructed_object_acted_on"]["successes"] == 3
    assert report["wrong_object"]["successes"] == 1


def test_approach_rates_count_where_the_robot_went_grasped_or_not():
    episodes = [episode(7, "red", False, "a", approached="red"),  # reached the right cube, no lift
                episode(7, "green", False, "b", approached="red"),  # went to the first one again
                episode(8, "blue", True, "c", approached="blue"), episode(8, "red", False, "d")]  # nowhere
    report = paired_report(episodes)
    assert report["instructed_object_approached"]["successes"] == 2
    assert report["other_object_approached"]["successes"] == 1
    assert report["both_instructed_objects_approached"]["successes"] == 0
    assert report["instructed_object_acted_on"]["successes"] == 1
    assert task_report(episodes)["instructed_object_approached"]["episodes"] == 4
    # a task without goals (transfer_cube) has no approach rates
    assert "instructed_object_approached" not in task_report([episode(1, None, True, "transfer")])
