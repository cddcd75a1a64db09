"""Simulation core (pure, no ROS): a MuJoCo ALOHA rig, a kinematic mobile base, a tiny nav world.

Everything runs on simulated time: nothing here sleeps or reads the wall
clock; the caller advances time with ``step(dt)``.

``gl_backend`` is imported first on purpose: it sets ``MUJOCO_GL`` (egl, else
osmesa, unless the user set it) before anything imports ``mujoco``.
"""

# isort: off
from .gl_backend import GL_BACKEND, RenderBackendUnavailable
from .errors import SimConfigError, SimInputError
# isort: on
from .aloha_conventions import (
    INTERBOTIX_JOINT_STATE_NAMES,
    START_ARM_POSE,
    GripperConversion,
)
from .aloha_sim import CAMERA_STAND_INS, DEFAULT_CAMERAS, AlohaSim
from .base_scene import DEFAULT_OBSTACLES, MobileBaseSim, Obstacle
from .kinematic_base import BaseLimits, KinematicBase
from .renderer import SimCamera

__all__ = [
    "CAMERA_STAND_INS",
    "DEFAULT_CAMERAS",
    "DEFAULT_OBSTACLES",
    "GL_BACKEND",
    "INTERBOTIX_JOINT_STATE_NAMES",
    "START_ARM_POSE",
    "AlohaSim",
    "BaseLimits",
    "GripperConversion",
    "KinematicBase",
    "MobileBaseSim",
    "Obstacle",
    "RenderBackendUnavailable",
    "SimCamera",
    "SimConfigError",
    "SimInputError",
]
