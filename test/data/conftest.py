"""Fixtures for the data tests: a small embodiment and a factory of synthetic recordings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_recordings import SMALL_ALOHA_YAML, RecordingSpec, write_recording

from qwen_vla_ros.embodiment import load_embodiment

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_aloha(tmp_path_factory):
    """aloha_sim with small cameras: one rgb8, one bgr8 (row padding), one jpeg."""
    path = tmp_path_factory.mktemp("embodiment") / "small_aloha.yaml"
    path.write_text(SMALL_ALOHA_YAML)
    return load_embodiment(path)


@pytest.fixture
def recording_factory(tmp_path, small_aloha):
    """Call with a RecordingSpec (or nothing) to get a fresh recording path."""
    counter = iter(range(1000))

    def make(spec: RecordingSpec | None = None, name: str | None = None) -> Path:
        return write_recording(tmp_path / (name or f"rec{next(counter)}.mcap"), small_aloha, spec)

    return make
