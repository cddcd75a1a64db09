"""ObservationAssembler: complete, fresh, consistent observations or every reason why not."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_vla_ros.embodiment import load_embodiment
from qwen_vla_ros.observation import (
    MAX_INSTRUCTION_CHARS,
    InstructionError,
    ObservationAssembler,
    ObservationNotReady,
)

ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]


@pytest.fixture()
def emb():
    return load_embodiment("aloha_sim")


def _feed(asm: ObservationAssembler, t: float, finger: float = 0.0579) -> None:
    for cam in asm.embodiment.camera_names:
        asm.add_image(cam, np.full((480, 640, 3), 7, np.uint8), stamp=t, received=t)
    for side in ("left_arm", "right_arm"):
        values = dict(zip(ARM, [0.1, -0.9, 1.1, 0.0, -0.3, 0.2], strict=True), left_finger=finger)
        asm.add_joint_values(side, values, stamp=t, received=t)


def test_complete_observation_has_model_sized_images_and_normalised_grippers(emb):
    asm = ObservationAssembler(emb)
    asm.set_instruction("  pick   up the cube ")
    _feed(asm, 10.0)
    obs = asm.assemble(now=10.05)
    assert obs.instruction == "pick up the cube"
    assert {k: v.shape for k, v in obs.images.items()} == {c.name: (*c.image_size, 3) for c in emb.cameras}
    assert obs.state.shape == (14,)
    assert obs.state[6] == pytest.approx(1.0) and obs.state[13] == pytest.approx(1.0)
    assert obs.state[1] == pytest.approx(-0.9)


def test_stale_camera_is_refused_with_its_name(emb):
    asm = ObservationAssembler(emb)
    asm.set_instruction("go")
    _feed(asm, 10.0)
    with pytest.raises(ObservationNotReady, match="camera 'cam_high' is stale"):
        asm.assemble(now=10.5)


def test_missing_sources_and_instruction_are_all_reported(emb):
    asm = ObservationAssembler(emb)
    with pytest.raises(ObservationNotReady) as info:
        asm.assemble(now=1.0)
    text = " | ".join(info.value.reasons)
    assert "cam_left_wrist" in text and "left_arm" in text and "no instruction" in text


def test_skewed_sources_are_refused(emb):
    asm = ObservationAssembler(emb, max_skew_s=0.05)
    asm.set_instruction("go")
    _feed(asm, 10.0)
    asm.add_image("cam_high", np.zeros((224, 224, 3), np.uint8), stamp=9.8, received=10.0)
    with pytest.raises(ObservationNotReady, match="apart"):
        asm.assemble(now=10.01)


def test_nan_state_is_rejected_at_the_door(emb):
    asm = ObservationAssembler(emb)
    with pytest.raises(ValueError, match="non-finite values for elbow"):
        asm.add_joint_values("left_arm", {"elbow": float("nan")}, stamp=0.0, received=0.0)


def test_wrong_image_shape_is_rejected(emb):
    asm = ObservationAssembler(emb)
    with pytest.raises(ValueError, match="expected \\(h, w, 3\\) uint8"):
        asm.add_image("cam_high", np.zeros((224, 224), np.uint8), stamp=0.0, received=0.0)


def test_megabyte_instruction_is_refused_not_truncated(emb):
    asm = ObservationAssembler(emb)
    with pytest.raises(InstructionError, match="refused"):
        asm.set_instruction("x" * (MAX_INSTRUCTION_CHARS + 1))
    assert asm.instruction == ""
