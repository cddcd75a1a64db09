"""Exceptions of the model layer: each names the problem and what to do about it."""

from __future__ import annotations


class ModelInputError(ValueError):
    """An observation or training batch the policy cannot use (shape, dtype, NaN, camera...)."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, unsafe (pickle) or mismatched."""


class MissingNormalizationError(LookupError):
    """The policy has no normalisation statistics for the requested embodiment.

    Raised instead of returning raw (un-normalised) outputs, which would be wrong in
    every unit. Add statistics with ``policy.set_normalization(name, stats)``.
    """
