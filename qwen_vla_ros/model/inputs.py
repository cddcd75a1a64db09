"""Checking what goes into the policy: observations at inference, batches in training.

Every check raises :class:`ModelInputError` naming the field, what was expected and
what arrived, so a wiring mistake (wrong camera size, a stale joint order) is found
at once instead of producing plausible-looking but wrong actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import ModelInputError
from .processor import PromptSample

if TYPE_CHECKING:
    from ..embodiment import Embodiment
    from ..types import Observation


def check_instruction(instruction: object, where: str = "instruction") -> str:
    if not isinstance(instruction, str) or not instruction.strip():
        raise ModelInputError(f"{where}: the instruction is empty; give the task in words")
    return instruction.strip()


def check_vector(values: object, length: int, where: str) -> np.ndarray:
    """A finite float vector of exactly ``length`` values."""
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (length,):
        raise ModelInputError(f"{where}: expected shape ({length},), got {vector.shape}")
    bad = np.flatnonzero(~np.isfinite(vector))
    if bad.size:
        raise ModelInputError(f"{where}: NaN or inf at index {bad.tolist()}")
    return vector


def check_image(name: str, image: object, size_hw: tuple[int, int] | None) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array; with ``size_hw`` the size must match exactly."""
    if not isinstance(image, np.ndarray):
        raise ModelInputError(
            f"camera {name!r}: expected a numpy array, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ModelInputError(
            f"camera {name!r}: expected dtype uint8 (0-255 RGB), got {image.dtype}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ModelInputError(
            f"camera {name!r}: expected (height, width, 3) RGB, got shape {image.shape}"
        )
    if size_hw is not None and tuple(image.shape[:2]) != tuple(size_hw):
        raise ModelInputError(
            f"camera {name!r}: expected {size_hw[0]}x{size_hw[1]} (height x width) as the "
            f"embodiment's image_size says, got {image.shape[0]}x{image.shape[1]}"
        )
    return image


def observation_images(
    observation: Observation, embodiment: Embodiment
) -> list[tuple[str, np.ndarray]]:
    """The observation's images in the embodiment's camera order, each checked.

    A missing required camera is an error; a missing optional camera is left out
    (its slot is not in the prompt, so the model knows it is absent).
    """
    known = set(embodiment.camera_names)
    unknown = sorted(set(observation.images) - known)
    if unknown:
        raise ModelInputError(
            f"unknown camera(s) {unknown} for embodiment {embodiment.name!r} "
            f"(cameras: {embodiment.camera_names})"
        )
    images = []
    for camera in embodiment.cameras:
        image = observation.images.get(camera.name)
        if image is None:
            if camera.required:
                raise ModelInputError(
                    f"required camera {camera.name!r} is missing from the observation "
                    f"(got {sorted(observation.images)})"
                )
            continue
        images.append((camera.name, check_image(camera.name, image, camera.image_size)))
    return images


def observation_prompt(
    observation: Observation, embodiment: Embodiment, text_only: bool
) -> PromptSample:
    """A checked observation as a backbone prompt sample."""
    instruction = check_instruction(observation.instruction)
    images = [] if text_only else observation_images(observation, embodiment)
    return PromptSample(embodiment.prompt, instruction, images)


def batch_prompts(batch: dict, embodiments: list[Embodiment]) -> list[PromptSample]:
    """Prompt samples of a training batch; images optional (text-only without them).

    Uses ``batch['images']`` (camera -> (B, H, W, 3) uint8) and, when present,
    ``batch['image_mask']`` (camera -> (B,) bool, False = that sample lacks the camera).
    Each sample only takes the cameras its embodiment has, in the embodiment's order.
    """
    instructions = batch.get("instructions")
    if not isinstance(instructions, (list, tuple)) or len(instructions) != len(embodiments):
        raise ModelInputError(
            f"batch['instructions'] must be a list of {len(embodiments)} strings, got {instructions!r}"
        )
    images = batch.get("images") or {}
    masks = batch.get("image_mask") or {}
    columns = {name: _image_column(name, value, len(embodiments)) for name, value in images.items()}
    samples = []
    for index, (embodiment, instruction) in enumerate(zip(embodiments, instructions, strict=True)):
        text = check_instruction(instruction, f"batch['instructions'][{index}]")
        picked = [
            (name, columns[name][index])
            for name in embodiment.camera_names
            if name in columns and bool(masks.get(name, [True] * len(embodiments))[index])
        ]
        samples.append(PromptSample(embodiment.prompt, text, picked))
    return samples


def _image_column(name: str, value: object, batch_size: int) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != 4 or array.shape[0] != batch_size:
        raise ModelInputError(
            f"batch['images'][{name!r}]: expected (B={batch_size}, H, W, 3), got {array.shape}"
        )
    for image in array[:1]:
        check_image(name, image, None)
    return array


def as_float_tensor(value: object, where: str) -> torch.Tensor:
    """A finite float32 tensor (CPU) from a tensor or array."""
    tensor = torch.as_tensor(value).detach().to("cpu", torch.float32)
    if not torch.isfinite(tensor).all():
        raise ModelInputError(f"{where}: contains NaN or inf")
    return tensor


def batch_embodiment_names(batch: dict) -> list:
    """One embodiment (name or object) per sample, from ``batch['embodiment']``."""
    instructions = batch.get("instructions")
    if not isinstance(instructions, (list, tuple)) or not instructions:
        raise ModelInputError("batch['instructions'] must be a non-empty list of strings")
    given = batch.get("embodiment")
    if given is None:
        raise ModelInputError("batch['embodiment'] is missing (a name, or one per sample)")
    names = list(given) if isinstance(given, (list, tuple)) else [given] * len(instructions)
    if len(names) != len(instructions):
        raise ModelInputError(f"{len(names)} embodiments for {len(instructions)} samples")
    return names


def batch_arrays(
    batch: dict, embodiments: list[Embodiment], max_horizon: int
) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Checked actions (B, H, D) and state (B, D) (numpy, model units) and step mask (B, H)."""
    size = len(embodiments)
    if "actions" not in batch or "state" not in batch:
        raise ModelInputError("batch needs 'actions' (B, H, D) and 'state' (B, D)")
    actions = as_float_tensor(batch["actions"], "batch['actions']").numpy()
    state = as_float_tensor(batch["state"], "batch['state']").numpy()
    if actions.ndim != 3 or actions.shape[0] != size or state.shape != (size, actions.shape[2]):
        raise ModelInputError(
            f"batch['actions'] must be (B={size}, H, D) and batch['state'] (B, D); "
            f"got {actions.shape} and {state.shape}"
        )
    if actions.shape[1] > max_horizon:
        raise ModelInputError(f"horizon {actions.shape[1]} exceeds max_horizon {max_horizon}")
    for i, emb in enumerate(embodiments):
        if emb.action_dim > actions.shape[2]:
            raise ModelInputError(
                f"sample {i} ({emb.name}) needs {emb.action_dim} dims, batch has {actions.shape[2]}"
            )
    pad = batch.get("action_is_pad")
    steps = torch.ones(actions.shape[:2])
    if pad is not None:
        steps = (~torch.as_tensor(pad, dtype=torch.bool)).float()
    if steps.shape != actions.shape[:2]:
        raise ModelInputError(
            f"batch['action_is_pad'] must be (B, H) = {actions.shape[:2]}, got {tuple(steps.shape)}"
        )
    return actions, state, steps
