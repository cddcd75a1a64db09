"""The DiT decoder and the flow-matching maths, on tiny configs."""

from __future__ import annotations

import pytest
import torch

from qwen_vla_ros.model import ActionDiT, count_parameters, dit_preset
from qwen_vla_ros.model.flow import (
    euler_sample,
    interpolate,
    masked_mse,
    padded_noise,
    sample_time,
    target_velocity,
)

PAPER_DECODER_PARAMS = 1.15e9
QWEN35_4B_HIDDEN = 2560


def test_paper_preset_has_1_15_billion_parameters():
    count = count_parameters(dit_preset("paper", cond_dim=QWEN35_4B_HIDDEN))
    assert abs(count - PAPER_DECODER_PARAMS) / PAPER_DECODER_PARAMS < 0.03, count


def test_tiny_preset_is_under_five_million_and_small_is_between():
    tiny = count_parameters(dit_preset("tiny", cond_dim=64))
    small = count_parameters(dit_preset("small", cond_dim=1024))
    assert tiny < 5e6
    assert tiny < small < count_parameters(dit_preset("paper", cond_dim=1024))


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown decoder preset 'huge'"):
        dit_preset("huge")


def _inputs(batch=3, horizon=7, config=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    dim = config.max_action_dim
    mask = torch.zeros(batch, dim)
    mask[:, :5] = 1
    return dict(
        noisy_actions=torch.randn(batch, horizon, dim, generator=generator) * mask[:, None],
        time=torch.rand(batch, generator=generator),
        state=torch.randn(batch, dim, generator=generator) * mask,
        dim_mask=mask,
        cond=torch.randn(batch, 11, config.cond_dim, generator=generator),
        cond_mask=torch.ones(batch, 11, dtype=torch.bool),
    )


def _trained_like(config):
    """A decoder whose zero-initialised output layers are perturbed, so outputs depend on inputs."""
    torch.manual_seed(0)
    model = ActionDiT(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def test_forward_shape_and_zero_initial_velocity():
    config = dit_preset("tiny", cond_dim=48, max_action_dim=16, max_horizon=12)
    inputs = _inputs(config=config)
    fresh = ActionDiT(config)
    out = fresh(**inputs)
    assert out.shape == (3, 7, 16)
    assert torch.count_nonzero(out) == 0  # adaLN-zero: a new decoder predicts zero velocity
    assert _trained_like(config)(**inputs).abs().sum() > 0


def test_output_depends_on_time_state_and_masked_conditioning():
    config = dit_preset("tiny", cond_dim=48, max_action_dim=16, max_horizon=12)
    model, inputs = _trained_like(config), _inputs(config=config)
    base = model(**inputs)
    assert not torch.allclose(base, model(**{**inputs, "time": inputs["time"] * 0.5}))
    assert not torch.allclose(base, model(**{**inputs, "state": inputs["state"] + 1}))
    cond = inputs["cond"].clone()
    cond[:, -3:] += 10.0
    assert not torch.allclose(base, model(**{**inputs, "cond": cond}))
    masked = inputs["cond_mask"].clone()
    masked[:, -3:] = False
    # Changing only masked-out conditioning tokens leaves the output unchanged.
    torch.testing.assert_close(
        model(**{**inputs, "cond_mask": masked}),
        model(**{**inputs, "cond": cond, "cond_mask": masked}),
    )


def test_horizon_beyond_max_is_an_error():
    config = dit_preset("tiny", cond_dim=48, max_action_dim=16, max_horizon=4)
    with pytest.raises(ValueError, match="exceeds the decoder's max_horizon 4"):
        ActionDiT(config)(**_inputs(horizon=5, config=config))


def test_flow_path_and_target_follow_pi0_convention():
    actions, noise = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    torch.testing.assert_close(interpolate(actions, noise, torch.ones(2)), noise)
    torch.testing.assert_close(interpolate(actions, noise, torch.zeros(2)), actions)
    half = interpolate(actions, noise, torch.full((2,), 0.25))
    torch.testing.assert_close(half, 0.25 * noise + 0.75 * actions)
    torch.testing.assert_close(target_velocity(actions, noise), noise - actions)


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_euler_sampler_recovers_action_from_exact_velocity(steps):
    actions, noise = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    calls, times = [], []

    def velocity(sample, flow_time):
        calls.append(1)
        times.append(float(flow_time[0]))
        return noise - actions  # straight path: Euler is exact

    torch.testing.assert_close(euler_sample(velocity, noise, steps), actions, atol=1e-5, rtol=0)
    assert len(calls) == steps
    assert times[0] == pytest.approx(1.0) and times == sorted(times, reverse=True)


def test_training_times_and_noise_are_seeded_and_masked():
    times = sample_time(1000, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert times.min() >= 1e-3 and times.max() <= 1.0
    assert times.mean() > 0.55  # Beta(1.5, 1) has mean 0.6: more weight near noise
    again = sample_time(1000, torch.Generator().manual_seed(3), torch.device("cpu"))
    torch.testing.assert_close(times, again)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    noise = padded_noise((1, 4, 3), mask, torch.Generator().manual_seed(0), "cpu", torch.float32)
    assert torch.count_nonzero(noise[..., 2]) == 0 and torch.count_nonzero(noise[..., :2]) == 8


def test_masked_mse_ignores_masked_elements():
    prediction, target = torch.zeros(1, 2, 2), torch.tensor([[[1.0, 100.0], [3.0, 100.0]]])
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert masked_mse(prediction, target, mask).item() == pytest.approx(5.0)
