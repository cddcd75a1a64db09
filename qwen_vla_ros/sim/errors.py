"""Exceptions of the simulation core."""

from __future__ import annotations


class SimInputError(ValueError):
    """A command given to the simulator is malformed or out of range."""


class SimConfigError(ValueError):
    """The simulator was configured with something its model does not have."""
