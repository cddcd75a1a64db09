"""The fast inference path: bucketed prompts, the compiled Euler loop, fallback, warm-up.

``torch.compile`` runs on CPU too (inductor's C++ kernels), so the compiled loop is checked
against the eager sampler here; CUDA graphs (``mode="reduce-overhead"``) need a GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from qwen_vla_ros.model import NormStats, QwenVLAPolicy, tiny_backbone
from qwen_vla_ros.model.fast_path import euler_loop, pad_prompt

INSTRUCTIONS = ("pick up the cube", "insert the peg into the socket and then open the drawer slowly")


def _policy(embodiment) -> QwenVLAPolicy:
    policy = QwenVLAPolicy.from_backbone(tiny_backbone("qwen3_5", seed=0), "tiny", seed=0)
    policy.set_normalization(embodiment.name, NormStats.from_limits(embodiment))
    with torch.no_grad():  # a non-zero output layer, so chunks depend on every input
        policy.decoder.action_out.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    return policy.eval()


@pytest.fixture(scope="module")
def embodiment(signed_arm):
    return signed_arm


@pytest.fixture(scope="module")
def eager(embodiment):
    return _policy(embodiment)


def _chunks(policy, embodiment, observe, *, seed=3, steps=2, prefix=None):
    observations = [observe(embodiment, seed=i, instruction=text) for i, text in enumerate(INSTRUCTIONS)]
    return np.stack([c.actions for c in policy.predict_chunks(observations, embodiment, seed=seed, num_steps=steps,
                                                               prefix=prefix)])


def test_prompts_are_right_padded_to_the_bucket():
    inputs = {"input_ids": torch.ones(2, 70, dtype=torch.long), "attention_mask": torch.ones(2, 70, dtype=torch.long),
              "mm_token_type_ids": torch.ones(2, 70, dtype=torch.int32), "pixel_values": torch.zeros(5, 3)}
    padded = pad_prompt(inputs, 64, pad_token_id=7)
    assert padded["input_ids"].shape == (2, 128) and torch.all(padded["input_ids"][:, 70:] == 7)
    assert padded["attention_mask"][:, :70].all() and not padded["attention_mask"][:, 70:].any()
    assert not padded["mm_token_type_ids"][:, 70:].any() and padded["pixel_values"] is inputs["pixel_values"]
    assert pad_prompt(padded, 64, 7) is padded  # already a multiple


def test_bucketed_eager_path_matches_the_plain_policy(embodiment, eager, observe):
    fast = _policy(embodiment)
    path = fast.enable_fast_inference()  # on CPU: no compilation, decoder stays float32
    assert not path.compile and next(fast.decoder.parameters()).dtype == torch.float32
    reference = _chunks(eager, embodiment, observe)
    np.testing.assert_allclose(_chunks(fast, embodiment, observe), reference, atol=1e-5)
    prefix = reference[0, :3]
    with_prefix = _chunks(fast, embodiment, observe, prefix=prefix)
    np.testing.assert_allclose(with_prefix, _chunks(eager, embodiment, observe, prefix=prefix), atol=1e-5)
    np.testing.assert_allclose(with_prefix[:, :3], np.broadcast_to(prefix, (2, 3, 2)), atol=1e-6)


def test_compiled_euler_loop_matches_eager_chunks(embodiment, eager, observe):
    compiled = _policy(embodiment)
    path = compiled.enable_fast_inference(compile=True, compile_backbone=False)
    reference = _chunks(eager, embodiment, observe)
    np.testing.assert_allclose(_chunks(compiled, embodiment, observe), reference, atol=1e-4)
    prefix = reference[0, :2]  # another prefix length: the same compiled graph (static shapes)
    np.testing.assert_allclose(_chunks(compiled, embodiment, observe, seed=5, prefix=prefix),
                               _chunks(eager, embodiment, observe, seed=5, prefix=prefix), atol=1e-4)
    assert path.compile  # no fallback happened


def test_a_failing_compiled_function_falls_back_to_eager(embodiment, eager, observe, caplog):
    policy = _policy(embodiment)
    path = policy.enable_fast_inference(compile=False)

    def broken(*args):
        raise RuntimeError("no compiler here")

    path.compile, path._sampler = True, broken
    with caplog.at_level(logging.WARNING, logger="qwen_vla_ros.model.fast_path"):
        chunks = _chunks(policy, embodiment, observe)
    assert not path.compile and path._sampler is euler_loop
    assert "Euler loop failed (RuntimeError: no compiler here)" in caplog.text
    np.testing.assert_allclose(chunks, _chunks(eager, embodiment, observe), atol=1e-5)


def test_warm_up_runs_one_dummy_chunk(embodiment):
    policy = _policy(embodiment)
    policy.enable_fast_inference(compile=False)
    assert policy.warm_up(embodiment, num_steps=2, batch_size=2) > 0


@pytest.mark.parametrize("pointer", [False, True], ids=["key-pose head", "with grounding pointer"])
def test_the_key_pose_head_and_token_positions_survive_prompt_padding(embodiment, observe, pointer):
    plain, fast = _policy(embodiment), _policy(embodiment)
    for policy in (plain, fast):
        torch.manual_seed(2)  # the same fresh head weights
        policy.add_grounding_pointer() if pointer else policy.add_subgoal_head()
        with torch.no_grad():  # token positions read (they start at zero), and what the pointer picks
            policy.decoder.grid_proj.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
            if pointer:
                policy.decoder.key_pose.pointed.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    fast.enable_fast_inference()  # right-pads both prompts to a bucket; eager pads the shorter one
    with_head = _chunks(plain, embodiment, observe)
    np.testing.assert_allclose(_chunks(fast, embodiment, observe), with_head, atol=1e-5)
    assert not np.allclose(with_head, _chunks(_policy(embodiment), embodiment, observe), atol=1e-3)  # it is read
