"""Assemble complete, fresh observations from asynchronously arriving sources (pure core).

The observation node feeds every camera frame, joint state and odometry message into an
:class:`ObservationAssembler`; the inference worker asks it for an :class:`Observation`
when it is about to infer. ``assemble`` refuses (with every reason) when a required camera
or a state source is missing or stale, when sources are skewed further apart than allowed,
or when the state holds NaN: the policy never sees a half-observation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from .embodiment import Embodiment
from .types import Observation

#: Instructions longer than this are refused, not truncated: they are bugs, not tasks.
MAX_INSTRUCTION_CHARS = 2000


class ObservationNotReady(RuntimeError):
    """No usable observation now; ``reasons`` says why, one line per source."""

    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__("; ".join(reasons))


class InstructionError(ValueError):
    """An instruction that cannot be a task (too long, not text)."""


@dataclass
class _Stamped:
    value: object
    stamp: float  # s, capture time (header stamp)
    received: float  # s, node clock at arrival


def validate_instruction(text: str) -> str:
    """Strip and check an instruction; empty means 'stop'. Raises InstructionError."""
    if not isinstance(text, str):
        raise InstructionError(f"instruction must be text, got {type(text).__name__}")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InstructionError(
            f"instruction of {len(text)} characters refused (limit {MAX_INSTRUCTION_CHARS})"
        )
    return " ".join(text.split())


class ObservationAssembler:
    """Latest value per source, and the rules that make them one observation.

    Args:
        embodiment: which cameras and state sources to expect.
        max_skew_s: largest spread of capture stamps across sources, s.
    """

    def __init__(self, embodiment: Embodiment, max_skew_s: float = 0.25):
        self.embodiment = embodiment
        self.max_skew_s = max_skew_s
        self._images: dict[str, _Stamped] = {}
        self._joint_states: dict[str, _Stamped] = {}
        self._instruction = ""
        self._joint_index = self._build_state_index()
        self._cameras = {c.name: c for c in embodiment.cameras}
        # callbacks write from the executor thread while the inference worker reads
        self._lock = threading.RLock()

    def _build_state_index(self) -> list[tuple[int, str, str, str | None]]:
        """(action index, source, joint, gripper group name or None) per configured state."""
        index, i = [], 0
        for group in self.embodiment.action_groups:
            for joint in group.joints:
                if joint.state is not None:
                    gripper = group.name if group.kind == "gripper" else None
                    index.append((i, joint.state.source, joint.state.joint, gripper))
                i += 1
        return index

    # -- inputs -------------------------------------------------------------------
    def set_instruction(self, text: str) -> str:
        self._instruction = validate_instruction(text)
        return self._instruction

    @property
    def instruction(self) -> str:
        return self._instruction

    def add_image(self, camera: str, rgb: np.ndarray, stamp: float, received: float) -> None:
        """An RGB uint8 (h, w, 3) frame; resized here to the model's image size."""
        spec = self._cameras.get(camera)
        if spec is None:
            raise KeyError(f"camera '{camera}' is not in embodiment {self.embodiment.name}")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"camera '{camera}': expected (h, w, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        height, width = spec.image_size
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        with self._lock:
            self._images[camera] = _Stamped(np.ascontiguousarray(rgb), stamp, received)

    def add_joint_values(self, source: str, values: dict[str, float], stamp: float, received: float) -> None:
        """Named joint readings (JointState positions, or odometry linear_x/angular_z)."""
        bad = [name for name, v in values.items() if not np.isfinite(v)]
        if bad:
            raise ValueError(f"state source '{source}': non-finite values for {', '.join(bad)}")
        with self._lock:
            self._joint_states[source] = _Stamped(dict(values), stamp, received)

    def clear(self) -> None:
        """Forget every reading (after a reset)."""
        with self._lock:
            self._images.clear()
            self._joint_states.clear()

    # -- output ------------------------------------------------------------------------
    def state_vector(self) -> np.ndarray:
        """The latest state in action layout (rig units, gripper normalised); raises if incomplete."""
        with self._lock:
            return self._state_vector()

    def _state_vector(self) -> np.ndarray:
        state = np.zeros(self.embodiment.state_dim)
        missing = []
        for i, source, joint, gripper in self._joint_index:
            reading = self._joint_states.get(source)
            if reading is None or joint not in reading.value:
                missing.append(f"{source}/{joint}")
                continue
            value = reading.value[joint]
            if gripper is not None:
                value = self.embodiment.gripper_state_to_normalised(self.embodiment.group(gripper), value)
            state[i] = value
        if missing:
            raise ObservationNotReady([f"no state yet for {', '.join(missing)}"])
        return state

    def stale_state_sources(self, now: float) -> list[str]:
        """One line per state source that has sent nothing or is older than its ``max_age_s``
        (by arrival time ``now``, s); [] when every source is fresh."""
        problems = []
        with self._lock:
            for src in self.embodiment.state_sources:
                reading = self._joint_states.get(src.name)
                if reading is None:
                    problems.append(f"state source '{src.name}' ({src.topic}) has sent nothing")
                elif abs(now - reading.received) > src.max_age_s:  # negative: from before a clock reset
                    problems.append(
                        f"state source '{src.name}' ({src.topic}) is stale: "
                        f"{now - reading.received:.3f} s old (max_age_s {src.max_age_s:g})"
                    )
        return problems

    def _freshness_problems(self, now: float) -> tuple[list[str], list[float]]:
        problems, stamps = [], []
        for cam in self.embodiment.cameras:
            frame = self._images.get(cam.name)
            if frame is None:
                if cam.required:
                    problems.append(f"camera '{cam.name}' ({cam.topic}) has sent no image")
                continue
            age = now - frame.received
            if age > cam.max_age_s:
                if cam.required:
                    problems.append(f"camera '{cam.name}' is stale: last image {age:.3f} s ago (max {cam.max_age_s} s)")
                continue
            stamps.append(frame.stamp)
        for src in self.embodiment.state_sources:
            reading = self._joint_states.get(src.name)
            if reading is None:
                problems.append(f"state source '{src.name}' ({src.topic}) has sent nothing")
                continue
            age = now - reading.received
            if age > src.max_age_s:
                problems.append(f"state source '{src.name}' is stale: {age:.3f} s old (max {src.max_age_s} s)")
            stamps.append(reading.stamp)
        return problems, stamps

    def assemble(self, now: float) -> Observation:
        """A complete observation at time ``now`` (s), or ObservationNotReady with every reason."""
        with self._lock:
            return self._assemble(now)

    def _assemble(self, now: float) -> Observation:
        problems, stamps = self._freshness_problems(now)
        if not self._instruction:
            problems.append("no instruction (publish one on the instruction topic)")
        if stamps and max(stamps) - min(stamps) > self.max_skew_s:
            problems.append(
                f"sources are {max(stamps) - min(stamps):.3f} s apart (max skew {self.max_skew_s} s)"
            )
        if problems:
            raise ObservationNotReady(problems)
        images = {
            name: frame.value
            for name, frame in self._images.items()
            if now - frame.received <= self._cameras[name].max_age_s
        }
        return Observation(
            images=images,
            state=self._state_vector(),
            instruction=self._instruction,
            stamp=min(stamps) if stamps else now,
        )
