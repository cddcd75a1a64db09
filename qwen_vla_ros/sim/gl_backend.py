"""Choose MuJoCo's offscreen OpenGL backend before ``mujoco`` is first imported.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is imported, and PyOpenGL
locks its platform on first use, so the choice must be made before either
happens. The ``qwen_vla_ros.sim`` package imports this module first.

Order of preference: a value the user already set (always respected), then
``egl`` (Mesa llvmpipe or a GPU; Debian ``libegl1 libgl1 libgl1-mesa-dri``),
then ``osmesa`` (``libosmesa6``). With neither library present nothing is set
and rendering raises :class:`RenderBackendUnavailable` with a hint.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

#: Debian 12 packages that provide each headless backend.
BACKEND_PACKAGES = {"egl": "libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri", "osmesa": "libosmesa6"}

#: Why the backend was chosen (or not), for error messages.
BACKEND_REASON = "not configured yet"
#: MUJOCO_GL as the user set it before this package was imported (None if unset).
USER_MUJOCO_GL = os.environ.get("MUJOCO_GL") or None


class RenderBackendUnavailable(RuntimeError):
    """No offscreen OpenGL backend could render; the message says what to install."""


def _library_present(name: str) -> bool:
    return ctypes.util.find_library(name) is not None


def _choose_backend() -> tuple[str | None, str]:
    """Return (backend, why): the backend to put in MUJOCO_GL, or None to leave it unset."""
    preset = os.environ.get("MUJOCO_GL")
    if preset:
        return preset, "set by the user"
    if "mujoco" in sys.modules:
        # Too late: mujoco already picked its default (GLFW, which needs a display).
        return None, "mujoco was imported before qwen_vla_ros.sim without MUJOCO_GL set"
    if _library_present("EGL"):
        return "egl", "libEGL found"
    if _library_present("OSMesa"):
        return "osmesa", "libOSMesa found"
    return None, "neither libEGL nor libOSMesa is installed"


def configure_gl_backend() -> str | None:
    """Set MUJOCO_GL (and PyOpenGL's platform) if the user has not; return the backend.

    Safe to call repeatedly; only the first call before ``import mujoco`` matters.
    """
    backend, why = _choose_backend()
    global BACKEND_REASON
    BACKEND_REASON = why
    if backend and "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = backend
        if backend in BACKEND_PACKAGES:
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def unavailable_error(cause: BaseException) -> RenderBackendUnavailable:
    """A RenderBackendUnavailable explaining which backend failed and how to fix it."""
    backend = os.environ.get("MUJOCO_GL", "<unset: GLFW, needs a display>")
    hints = "; ".join(f"{b}: apt-get install {p}" for b, p in BACKEND_PACKAGES.items())
    return RenderBackendUnavailable(
        f"offscreen rendering failed with MUJOCO_GL={backend} ({BACKEND_REASON}): "
        f"{type(cause).__name__}: {cause}. Set MUJOCO_GL=egl or osmesa before importing "
        f"mujoco, and install a backend ({hints})."
    )


GL_BACKEND = configure_gl_backend()
