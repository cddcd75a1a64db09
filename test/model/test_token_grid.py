"""Image-token positions: each image token's merged patch and camera, text tokens zero."""

from __future__ import annotations

import pytest
import torch

from qwen_vla_ros.model.token_grid import GRID_FEATURES, image_token_grid, nearest_image_tokens

IMAGE = 9


def test_every_image_token_gets_its_patch_centre_and_camera():
    # sample 0: text, a 4x4-patch image (2x2 merged tokens), text, a 2x4 one (1x2 tokens)
    # sample 1: a 2x4 image only, then padding
    ids = torch.tensor([[1, IMAGE, IMAGE, IMAGE, IMAGE, 2, IMAGE, IMAGE],
                        [IMAGE, IMAGE, 3, 0, 0, 0, 0, 0]])
    grid = image_token_grid(ids, torch.tensor([[1, 4, 4], [1, 2, 4], [1, 2, 4]]), IMAGE, merge_size=2)
    assert grid.shape == (2, 8, GRID_FEATURES)
    torch.testing.assert_close(grid[0, 1:5, :3], torch.tensor(
        [[1.0, -0.5, -0.5], [1.0, 0.5, -0.5], [1.0, -0.5, 0.5], [1.0, 0.5, 0.5]]))  # row by row
    torch.testing.assert_close(grid[0, 6:8, :3], torch.tensor([[1.0, -0.5, 0.0], [1.0, 0.5, 0.0]]))
    assert grid[0, 1:5, 3].eq(1).all() and grid[0, 6:8, 4].eq(1).all()  # first and second camera
    assert grid[1, 0:2, 3].eq(1).all()  # each sample counts its own cameras
    text = torch.tensor([True, False, False, False, False, True, False, False])
    assert not grid[0, text].any() and not grid[1, 2:].any()


def test_prompts_and_grids_that_disagree_are_refused():
    ids = torch.tensor([[IMAGE, IMAGE, IMAGE, IMAGE]])
    with pytest.raises(ValueError, match="describes 2 images"):
        image_token_grid(ids, torch.tensor([[1, 4, 4], [1, 4, 4]]), IMAGE, merge_size=2)
    with pytest.raises(ValueError, match="more image tokens"):
        image_token_grid(ids, torch.tensor([[1, 2, 4]]), IMAGE, merge_size=2)
    assert not image_token_grid(torch.tensor([[1, 2]]), None, IMAGE, merge_size=2).any()


def test_the_token_holding_a_point_is_found_in_the_asked_camera():
    # a 4x6-patch image (2x3 merged tokens) then a 2x4 one (1x2 tokens), text around them
    ids = torch.tensor([[5, IMAGE, IMAGE, IMAGE, IMAGE, IMAGE, IMAGE, 5, IMAGE, IMAGE, 5]])
    grid = image_token_grid(ids, torch.tensor([[1, 4, 6], [1, 2, 4]]), IMAGE, merge_size=2)
    first = nearest_image_tokens(grid, torch.tensor([0]), torch.tensor([[0.9, 0.9]]))
    assert first.tolist() == [6]  # bottom-right token of the first image
    second = nearest_image_tokens(grid, torch.tensor([1]), torch.tensor([[0.1, 0.2]]))
    assert second.tolist() == [8]  # left token of the second image, not the first image's
    with pytest.raises(ValueError, match="no image tokens"):
        nearest_image_tokens(grid, torch.tensor([2]), torch.tensor([[0.5, 0.5]]))
