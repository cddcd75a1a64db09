"""Shared fixtures: one ALOHA sim per module (models load in ~50 ms, GL contexts cost more)."""

from __future__ import annotations

import pytest

from qwen_vla_ros.sim import GL_BACKEND, AlohaSim, SimCamera, gl_backend

SMALL_CAMERAS = {
    "cam_high": SimCamera("top", 64, 80),
    "cam_left_wrist": SimCamera("left_wrist", 48, 48),
}


@pytest.fixture(scope="session")
def gl_available() -> str:
    """The offscreen backend; skips only when none exists at all (a broken one fails)."""
    if GL_BACKEND is None:
        pytest.skip(f"no offscreen OpenGL backend for MuJoCo: {gl_backend.BACKEND_REASON} "
                    "(apt-get install libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri, or libosmesa6)")
    return GL_BACKEND


@pytest.fixture(scope="module")
def shared_sim():
    sim = AlohaSim("transfer_cube", cameras=SMALL_CAMERAS, seed=0)
    yield sim
    sim.close()


@pytest.fixture()
def sim(shared_sim):
    """The module's sim, freshly reset (seed 0) for each test."""
    shared_sim.reset(seed=0)
    return shared_sim
