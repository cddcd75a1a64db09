"""MUJOCO_GL is chosen on import, and a user's own choice is respected."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qwen_vla_ros.sim import GL_BACKEND, gl_backend

PROBE = "import os, qwen_vla_ros.sim as s; print(os.environ.get('MUJOCO_GL'), s.GL_BACKEND)"


def probe(env_gl: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    if env_gl is not None:
        env["MUJOCO_GL"] = env_gl
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_user_setting_is_respected():
    assert probe("osmesa") == "osmesa osmesa"


def test_default_is_a_headless_backend(gl_available):
    if gl_backend.USER_MUJOCO_GL:
        pytest.skip("this run has MUJOCO_GL preset; the default choice is not observable here")
    assert GL_BACKEND in ("egl", "osmesa")
    assert probe(None) == f"{GL_BACKEND} {GL_BACKEND}"
