"""`qwen-vla compare`: seed-by-seed comparison of two evaluations (exact McNemar test)."""

import json

import pytest

from qwen_vla_ros.cli import main
from qwen_vla_ros.eval_compare import CompareError, compare, mcnemar_exact


def _evaluation(model: str, successes: list[bool], task: str = "pick_color", approached=None) -> dict:
    goals = ["red", "green", "blue"]
    episodes = [
        {"seed": 100000 + i, "goal": goals[i % 3], "success": ok, "wrong_object": False,
         "approached": (approached or [None] * len(successes))[i]}
        for i, ok in enumerate(successes)
    ]
    return {"task": task, "model": model, "per_episode": episodes}


def test_mcnemar_exact_matches_the_binomial_tail():
    # 14 : 1 discordant seeds: 2 * (1 + 15) / 2**15
    assert mcnemar_exact(14, 1) == pytest.approx(2 * 16 / 2**15)
    assert mcnemar_exact(1, 14) == mcnemar_exact(14, 1)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)


def test_compare_counts_only_the_seeds_the_runs_disagree_on():
    before = _evaluation("a", [True, True, False, False, True])
    after = _evaluation("b", [True, False, True, True, True])
    after["node_params"] = {"inference_node": {"latch_key_pose": False}}
    report = compare(before, after)
    assert report["node_params"] == [None, {"inference_node": {"latch_key_pose": False}}]
    row = report["outcomes"]["success"]
    assert (row["before"], row["after"], row["episodes"]) == (3, 4, 5)
    assert (row["only_after"], row["only_before"]) == (2, 1)
    assert row["mcnemar_p"] == 1.0


def test_compare_scores_approaches_against_each_episodes_goal():
    before = _evaluation("a", [False, False, False], approached=["blue", None, "blue"])
    after = _evaluation("b", [False, False, False], approached=["red", "green", "red"])
    outcomes = compare(before, after)["outcomes"]
    # goals are red, green, blue: the second run went to the named cube twice, the first once
    assert outcomes["instructed_object_approached"]["before"] == 1
    assert outcomes["instructed_object_approached"]["after"] == 2
    assert outcomes["other_object_approached"]["before"] == 1
    assert outcomes["other_object_approached"]["after"] == 1


def test_compare_keeps_only_shared_scenes_and_refuses_unrelated_runs():
    before = _evaluation("a", [True] * 4)
    after = _evaluation("b", [False] * 6)
    report = compare(before, after)
    assert (report["scenes"], report["only_in_one_run"]) == (4, 2)
    with pytest.raises(CompareError, match="different tasks"):
        compare(before, _evaluation("b", [True], task="drive_to_color"))
    shifted = _evaluation("b", [True])
    shifted["per_episode"][0]["seed"] = 7
    with pytest.raises(CompareError, match="share no seed"):
        compare(before, shifted)
    with pytest.raises(CompareError, match="per_episode"):
        compare(before, {"task": "pick_color"})


def test_compare_command_prints_and_writes_the_table(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "eval.json").write_text(json.dumps(_evaluation("a", [False] * 6)))
    (tmp_path / "b.json").write_text(json.dumps(_evaluation("b", [True] * 6)))
    out = tmp_path / "compare.json"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b.json"), "--output", str(out)]) == 0
    assert "success" in capsys.readouterr().out
    assert json.loads(out.read_text())["outcomes"]["success"]["only_after"] == 6
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().out
