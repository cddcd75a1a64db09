"""Bad checkpoints and bad inputs give errors that name the problem."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.model import (
    CheckpointError,
    MissingNormalizationError,
    ModelInputError,
    QwenVLAPolicy,
)


@pytest.fixture
def checkpoint(tiny_policy_dirs, tmp_path):
    """A private copy of the tiny policy folder that a test may damage."""
    return shutil.copytree(tiny_policy_dirs["qwen3_5"], tmp_path / "policy")


def test_truncated_decoder_weights(checkpoint):
    path = checkpoint / "decoder.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="decoder.safetensors: truncated"):
        QwenVLAPolicy.from_pretrained(checkpoint)


def test_corrupt_decoder_header(checkpoint):
    path = checkpoint / "decoder.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"\x00garbage\xff\xfe!!"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        QwenVLAPolicy.from_pretrained(checkpoint)


def test_pickle_where_safetensors_is_expected(checkpoint):
    torch.save({"weight": torch.zeros(2)}, checkpoint / "decoder.safetensors")
    with pytest.raises(CheckpointError, match="pickle .* not safetensors"):
        QwenVLAPolicy.from_pretrained(checkpoint)


def test_backbone_with_only_pickle_weights(checkpoint):
    (checkpoint / "backbone" / "model.safetensors").unlink()
    torch.save({}, checkpoint / "backbone" / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"no safetensors weights; found pickle files \['pytorch_model.bin'\]"
    ):
        QwenVLAPolicy.from_pretrained(checkpoint)


def test_truncated_backbone_weights(checkpoint):
    path = checkpoint / "backbone" / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated"):
        QwenVLAPolicy.from_pretrained(checkpoint)


def test_decoder_shape_mismatch(checkpoint):
    config_path = checkpoint / "policy_config.json"
    config = json.loads(config_path.read_text())
    config["decoder"]["max_action_dim"] = 24
    config_path.write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatch \['action_in.weight: file \(64, 64\) vs model \(64, 48\)",
    ):
        QwenVLAPolicy.from_pretrained(checkpoint)


def test_decoder_width_not_matching_backbone(checkpoint):
    config_path = checkpoint / "policy_config.json"
    config = json.loads(config_path.read_text())
    config["decoder"]["cond_dim"] = 96
    config_path.write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match="decoder expects 96-wide features, backbone gives 64"
    ):
        QwenVLAPolicy.from_pretrained(checkpoint)


def test_missing_folder_or_config(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        QwenVLAPolicy.from_pretrained(tmp_path / "nowhere" / "deeper" / "x")
    with pytest.raises(CheckpointError, match="policy_config.json: missing"):
        QwenVLAPolicy.from_pretrained(tmp_path)


def test_embodiment_without_statistics(checkpoint, observe):
    (checkpoint / "normalization.json").write_text(json.dumps({}))
    model = QwenVLAPolicy.from_pretrained(checkpoint)
    emb = load_embodiment("aloha_sim")
    with pytest.raises(
        MissingNormalizationError, match="no normalisation statistics for embodiment 'aloha_sim'"
    ):
        model.predict_chunk(observe(emb), emb)


@pytest.fixture(scope="module")
def aloha():
    return load_embodiment("aloha_sim")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda o: o.state.__setitem__(3, np.nan), r"NaN or inf at index \[3\]"),
        (lambda o: o.state.__setitem__(0, np.inf), r"NaN or inf at index \[0\]"),
        (lambda o: setattr(o, "state", o.state[:13]), r"expected shape \(14,\), got \(13,\)"),
        (
            lambda o: o.images.__setitem__("cam_high", o.images["cam_high"][:80]),
            "expected 112x112 .* got 80x112",
        ),
        (
            lambda o: o.images.__setitem__("cam_high", o.images["cam_high"][..., :1]),
            r"expected \(height, width, 3\) RGB",
        ),
        (
            lambda o: o.images.__setitem__("cam_high", o.images["cam_high"].astype(np.float32)),
            "expected dtype uint8",
        ),
        (
            lambda o: o.images.__setitem__("cam_high", "not an image"),
            "expected a numpy array, got str",
        ),
        (lambda o: o.images.pop("cam_left_wrist"), "required camera 'cam_left_wrist' is missing"),
        (
            lambda o: o.images.__setitem__("cam_back", o.images["cam_high"]),
            r"unknown camera\(s\) \['cam_back'\]",
        ),
        (lambda o: setattr(o, "instruction", "   "), "the instruction is empty"),
    ],
    ids=[
        "nan",
        "inf",
        "length",
        "size",
        "channels",
        "dtype",
        "type",
        "missing_camera",
        "unknown_camera",
        "instruction",
    ],
)
def test_bad_observation(damage, message, policy, aloha, observe):
    obs = observe(aloha)
    damage(obs)
    with pytest.raises(ModelInputError, match=message):
        policy.predict_chunk(obs, aloha)


def test_embodiment_beyond_the_decoder_limits(policy, observe):
    emb = load_embodiment("aloha_sim")
    from qwen_vla_ros.model import NormStats

    wide = NormStats.from_arrays(np.zeros((4, 40)), np.zeros((4, 40)))
    with pytest.raises(ModelInputError, match="40 dims exceed max_action_dim 32"):
        policy.set_normalization("wide_robot", wide)
    with pytest.raises(ModelInputError, match="no observations"):
        policy.predict_chunks([], emb)


def _batch(emb, size=2, horizon=5):
    return {
        "state": torch.zeros(size, emb.action_dim),
        "actions": torch.zeros(size, horizon, emb.action_dim),
        "instructions": ["move"] * size,
        "embodiment": emb.name,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"instructions": ["move", ""]}, r"batch\['instructions'\]\[1\]: the instruction is empty"),
        ({"actions": torch.zeros(2, 5, 3)}, r"batch\['actions'\] must be \(B=2, H, D\)"),
        ({"actions": torch.full((2, 5, 14), float("nan"))}, r"batch\['actions'\]: contains NaN"),
        ({"actions": torch.zeros(2, 80, 14)}, "horizon 80 exceeds max_horizon 64"),
        ({"embodiment": ["aloha_sim"]}, "1 embodiments for 2 samples"),
        ({"images": {"cam_high": torch.zeros(2, 8, 8, 3)}}, "expected dtype uint8"),
        (
            {"action_is_pad": torch.zeros(2, 4, dtype=torch.bool)},
            r"action_is_pad'\] must be \(B, H\)",
        ),
    ],
    ids=[
        "instruction",
        "actions_shape",
        "actions_nan",
        "horizon",
        "embodiments",
        "image_dtype",
        "pad_shape",
    ],
)
def test_bad_training_batch(change, message, policy, aloha):
    with pytest.raises(ModelInputError, match=message):
        policy.compute_loss({**_batch(aloha), **change})


def test_safetensors_whose_header_length_looks_like_pickle_magic_is_accepted(tmp_path):
    """A 640-byte header starts the file with 0x80 0x02, a pickle protocol-2 opcode pair."""
    from safetensors.torch import load_file

    from qwen_vla_ros.model.checkpoint import check_safetensors_file

    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header = header.ljust(640, b" ")
    path = tmp_path / "weights.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + np.zeros(2, np.float32).tobytes())
    assert path.read_bytes()[:2] == b"\x80\x02"
    check_safetensors_file(path)
    assert load_file(path)["w"].tolist() == [0.0, 0.0]
