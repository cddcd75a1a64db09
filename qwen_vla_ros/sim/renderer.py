"""Offscreen rendering of named MuJoCo cameras at chosen sizes.

On a CPU-only machine (Mesa llvmpipe) rendering dominates the sim's cost, and
the gym-aloha scene asks for 4096 px shadow maps and 4x multisampling. The
``"fast"`` quality switches both off: about 3 to 6 ms instead of 25 to 45 ms
per 224x224 camera, with nearly identical images (no cast shadows, slightly
harder edges). ``"full"`` keeps the model's settings, matching the images of
gym-aloha and the LeRobot ``aloha_sim_*`` datasets.

Call :meth:`OffscreenCameras.render` from one thread at a time: each renderer
owns an OpenGL context.
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import mujoco
import numpy as np

from .errors import SimConfigError
from .gl_backend import unavailable_error

RENDER_QUALITIES = ("fast", "full")

_LIVE_CAMERA_SETS: weakref.WeakSet[OffscreenCameras] = weakref.WeakSet()
_EXIT_HOOK_REGISTERED = False


def _close_all_at_exit() -> None:
    for cameras in list(_LIVE_CAMERA_SETS):
        cameras.close()


def _register_exit_hook() -> None:
    """Close GL contexts at exit *before* MuJoCo's EGL module terminates its display.

    MuJoCo registers ``eglTerminate`` when it creates its first context; atexit
    runs hooks last-in first-out, so registering after that context exists
    puts this hook first. Otherwise interpreter shutdown prints EGLError noise.
    """
    global _EXIT_HOOK_REGISTERED
    if not _EXIT_HOOK_REGISTERED:
        atexit.register(_close_all_at_exit)
        _EXIT_HOOK_REGISTERED = True


@dataclass(frozen=True)
class SimCamera:
    """Which MuJoCo camera to render for one embodiment camera, and at what size (px)."""

    mujoco_camera: str
    height: int = 224
    width: int = 224
    #: vertical field of view to render with, deg; None keeps the scene's
    fovy_deg: float | None = None

    def __post_init__(self) -> None:
        for side, value in (("height", self.height), ("width", self.width)):
            if not isinstance(value, (int, np.integer)) or not 8 <= value <= 4096:
                raise SimConfigError(f"camera {self.mujoco_camera!r}: {side} {value!r} "
                                     "must be an integer between 8 and 4096 px")


def as_sim_camera(value) -> SimCamera:
    """Accept a SimCamera or a (mujoco_camera, height, width) tuple."""
    if isinstance(value, SimCamera):
        return value
    try:
        name, height, width = value
    except (TypeError, ValueError) as exc:
        raise SimConfigError(
            f"a camera must be SimCamera or (mujoco_camera, height, width), got {value!r}"
        ) from exc
    return SimCamera(str(name), int(height), int(width))


class OffscreenCameras:
    """Renders a fixed set of named cameras of one MuJoCo model to RGB arrays."""

    def __init__(
        self,
        model: mujoco.MjModel,
        cameras: Mapping[str, SimCamera | tuple[str, int, int]],
        quality: str = "fast",
    ) -> None:
        if quality not in RENDER_QUALITIES:
            raise SimConfigError(f"render quality must be one of {RENDER_QUALITIES}, got {quality!r}")
        self._model = model
        self._cameras = {str(k): as_sim_camera(v) for k, v in cameras.items()}
        self._camera_ids = {k: self._camera_id(c.mujoco_camera) for k, c in self._cameras.items()}
        self._set_fields_of_view()
        self._fast = quality == "fast"
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._prepare_model_for_rendering()

    @property
    def names(self) -> list[str]:
        return list(self._cameras)

    def spec(self, name: str) -> SimCamera:
        return self._cameras[self._check_name(name)]

    def render(self, data: mujoco.MjData, name: str) -> np.ndarray:
        """Render camera ``name`` of the current state: (height, width, 3) uint8 RGB."""
        camera = self._cameras[self._check_name(name)]
        renderer = self._renderer(camera.height, camera.width)
        renderer.update_scene(data, camera=self._camera_ids[name])
        if self._fast:
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        return renderer.render()

    def image_point(self, data: mujoco.MjData, name: str, world_xyz) -> tuple[float, float]:
        """Where a world point (m) appears in camera ``name``'s image in state ``data`` (camera
        poses as last computed, e.g. by ``mj_kinematics``): normalised coordinates (0 left/top
        .. 1 right/bottom; pinhole with the camera's vertical field of view, as MuJoCo renders;
        a resize of the image keeps them)."""
        spec = self._cameras[self._check_name(name)]
        camera_id = self._camera_ids[name]
        rotation = data.cam_xmat[camera_id].reshape(3, 3)
        local = rotation.T @ (np.asarray(world_xyz, dtype=np.float64) - data.cam_xpos[camera_id])
        focal = (spec.height / 2) / np.tan(np.radians(self._model.cam_fovy[camera_id]) / 2)
        depth = -local[2]  # MuJoCo cameras look along -z, with y up
        x = spec.width / 2 + focal * local[0] / depth
        y = spec.height / 2 - focal * local[1] / depth
        return float(x / spec.width), float(y / spec.height)

    def close(self) -> None:
        """Free the OpenGL contexts."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # -- internals ------------------------------------------------------------------
    def _camera_id(self, mujoco_camera: str) -> int:
        camera_id = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_CAMERA, mujoco_camera)
        if camera_id < 0:
            available = [self._model.camera(i).name for i in range(self._model.ncam)]
            raise SimConfigError(f"the model has no camera {mujoco_camera!r}; it has {available}")
        return camera_id

    def _set_fields_of_view(self) -> None:
        """Apply each camera's ``fovy_deg`` to this model's copy of its MuJoCo camera."""
        chosen: dict[int, float] = {}
        for name, camera in self._cameras.items():
            if camera.fovy_deg is None:
                continue
            camera_id = self._camera_ids[name]
            if chosen.setdefault(camera_id, camera.fovy_deg) != camera.fovy_deg:
                raise SimConfigError(f"MuJoCo camera {camera.mujoco_camera!r} is asked for two fields of view "
                                     f"({chosen[camera_id]} and {camera.fovy_deg} deg)")
            self._model.cam_fovy[camera_id] = camera.fovy_deg

    def _check_name(self, name: str) -> str:
        if name not in self._cameras:
            raise SimConfigError(f"no camera {name!r}; configured cameras are {self.names}")
        return name

    def _prepare_model_for_rendering(self) -> None:
        """Size the offscreen buffer for the largest camera; drop costly effects if fast.

        These visual settings are read when a renderer's GL context is created,
        so they must be set before the first render.
        """
        visual = self._model.vis
        if self._cameras:
            visual.global_.offwidth = max(visual.global_.offwidth,
                                          *(c.width for c in self._cameras.values()))
            visual.global_.offheight = max(visual.global_.offheight,
                                           *(c.height for c in self._cameras.values()))
        if self._fast:
            visual.quality.offsamples = 0
            visual.quality.shadowsize = 0

    def _renderer(self, height: int, width: int) -> mujoco.Renderer:
        key = (height, width)
        if key not in self._renderers:
            try:
                self._renderers[key] = mujoco.Renderer(self._model, height, width)
            except Exception as exc:  # any GL failure means no usable backend
                raise unavailable_error(exc) from exc
            _LIVE_CAMERA_SETS.add(self)
            _register_exit_hook()
        return self._renderers[key]
