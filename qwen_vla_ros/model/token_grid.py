"""Where each backbone token sits in its camera image, as features the decoder can read.

The Qwen language model places image tokens with rotary (M-RoPE) positions: inside the
backbone's attention a token knows its row and column, but its output vector need not say
it. The decoder's cross-attention has no positions of its own, so "the blue cube is at the
attended token" would not tell it *where*. :func:`image_token_grid` gives every token the
position of its merged patch (like the 2-D position embeddings ACT adds to its ResNet
features), and the decoder adds a learned projection of it to the token's memory entry.
"""

from __future__ import annotations

import torch

#: Cameras told apart by the grid features (a one-hot); later cameras share the last slot.
MAX_GRID_CAMERAS = 4
#: Features per token: is-image flag, column and row in [-1, 1], camera one-hot.
GRID_FEATURES = 3 + MAX_GRID_CAMERAS


def image_token_grid(
    input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None, image_token_id: int, merge_size: int
) -> torch.Tensor:
    """(B, L) prompt ids and (N, 3) patch grids (t, h, w) of the batch's N images, in prompt
    order -> (B, L, GRID_FEATURES) float: zeros for text tokens; for each image token 1, the
    column and row of its merged patch (centre, -1 left/top .. 1 right/bottom) and the
    one-hot of its image's index within its sample (the embodiment's camera order)."""
    batch, length = input_ids.shape
    grid = torch.zeros(batch, length, GRID_FEATURES, dtype=torch.float32)
    if image_grid_thw is None or len(image_grid_thw) == 0:
        return grid.to(input_ids.device)
    shapes = [(int(t), int(h) // merge_size, int(w) // merge_size) for t, h, w in image_grid_thw.tolist()]
    image = 0
    for row in range(batch):
        positions = torch.nonzero(input_ids[row] == image_token_id).flatten().tolist()
        start, camera = 0, 0
        while start < len(positions):
            if image >= len(shapes):
                raise ValueError("more image tokens in the prompts than image_grid_thw describes")
            frames, height, width = shapes[image]
            count = frames * height * width
            index = torch.arange(count)
            columns, rows = index % width, (index // width) % height
            where = torch.tensor(positions[start : start + count])
            grid[row, where, 0] = 1.0
            grid[row, where, 1] = (columns.float() + 0.5) / width * 2.0 - 1.0
            grid[row, where, 2] = (rows.float() + 0.5) / height * 2.0 - 1.0
            grid[row, where, 3 + min(camera, MAX_GRID_CAMERAS - 1)] = 1.0
            start, camera, image = start + count, camera + 1, image + 1
    if image != len(shapes):
        raise ValueError(f"image_grid_thw describes {len(shapes)} images, the prompts hold {image}")
    return grid.to(input_ids.device)


def nearest_image_tokens(grid: torch.Tensor, camera_index: torch.Tensor, image_xy: torch.Tensor) -> torch.Tensor:
    """The token of each row whose merged patch holds a point of one of its images.

    ``grid``: (B, L, GRID_FEATURES) from :func:`image_token_grid`; ``camera_index``: (B,) the
    image's index within its sample (< MAX_GRID_CAMERAS); ``image_xy``: (B, 2) the point in
    normalised image coordinates (0 left/top .. 1 right/bottom). Returns (B,) token indices
    (the patch whose centre is nearest, i.e. the one that contains the point).
    """
    camera_index = camera_index.to(grid.device).long()
    if (camera_index >= MAX_GRID_CAMERAS).any() or (camera_index < 0).any():
        raise ValueError(f"camera_index must lie in [0, {MAX_GRID_CAMERAS}), got {camera_index.tolist()}")
    rows = torch.arange(len(grid), device=grid.device)
    of_camera = (grid[..., 0] > 0) & (grid[rows, :, 3 + camera_index] > 0)  # (B, L)
    if not of_camera.any(dim=1).all():
        raise ValueError("a row has no image tokens of the asked camera")
    point = image_xy.to(grid.device, grid.dtype) * 2.0 - 1.0  # the grid's [-1, 1] convention
    distance = ((grid[..., 1:3] - point[:, None]) ** 2).sum(-1).masked_fill(~of_camera, float("inf"))
    return distance.argmin(dim=1)
