"""Which dataset feature feeds which part of an embodiment (pure core).

Datasets written by this package name state and action dimensions ``group/joint``,
exactly the embodiment's ``action_names``, and cameras ``observation.images.<camera>``.
Datasets from LeRobot's own recorders name them after the motors: ``["shoulder_pan.pos",
...]`` or, in older datasets, ``{"motors": ["left_waist", ...]}``. A dataset dimension
feeds embodiment dimension ``group/joint`` when (first rule that applies):

1. the mapping (``dataset_names.joints`` in the embodiment file, or the reader's
   ``names`` argument) gives its name for ``group/joint``;
2. its name is ``group/joint`` (or ``group/joint.pos``);
3. its name is ``joint`` or ``joint.pos`` and no other group has a joint of that name.

Every embodiment dimension needs exactly one dataset dimension and every dataset
dimension must be used (the counts are equal and none is used twice); otherwise :class:`DatasetError` names the dimension and says
where to map it. Features without names are taken in order. A camera is read from
``observation.images.<camera>``, or from the feature ``dataset_names.cameras`` names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..embodiment import Embodiment
from ..embodiment.schema import DatasetNames
from . import layout as L
from .errors import DatasetError

POSITION_SUFFIX = ".pos"  # LeRobot's recorders name a motor's position "<motor>.pos"
_HOW_TO_MAP = "map it under dataset_names.{what} in the embodiment file (docs/embodiment.md)"


@dataclass(frozen=True)
class FeatureMap:
    """Where an embodiment's state, action and cameras are in one dataset.

    Attributes:
        state_index / action_index: for each embodiment dimension, its column in the
            dataset's observation.state / action vectors.
        camera_keys: embodiment camera name -> dataset feature key.
        camera_dtypes: dataset feature key -> "video" or "image".
    """

    state_index: np.ndarray
    action_index: np.ndarray
    camera_keys: dict[str, str]
    camera_dtypes: dict[str, str]


def merged_names(embodiment: Embodiment, names: DatasetNames | Mapping | None) -> DatasetNames:
    """The embodiment file's ``dataset_names`` with the reader argument's entries on top."""
    base = embodiment.spec.dataset_names
    if names is None:
        return base
    extra = names if isinstance(names, DatasetNames) else DatasetNames.model_validate(dict(names))
    unknown = sorted(set(extra.joints) - set(embodiment.action_names))
    if unknown:
        raise DatasetError(f"{unknown} are not dimensions of '{embodiment.name}'", field="names")
    return DatasetNames(
        joints={**base.joints, **extra.joints}, cameras={**base.cameras, **extra.cameras}
    )


def feature_names(feature: dict[str, Any]) -> list[str] | None:
    """A vector feature's dimension names: a list, ``{"motors": [...]}``-style, or None."""
    names = feature.get("names")
    if names is None:
        return None
    if isinstance(names, dict):
        lists = [v for v in names.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DatasetError(f"names {names} hold no single list of dimension names")
        names = lists[0]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"names {names!r} are not a list of dimension names")
    return list(names)


def _spellings(embodiment: Embodiment) -> dict[str, list[str]]:
    """Embodiment dimension -> the dataset names rules 2 and 3 accept for it."""
    counts: dict[str, int] = {}
    for group in embodiment.action_groups:
        for joint in group.joints:
            counts[joint.name] = counts.get(joint.name, 0) + 1
    out = {}
    for group in embodiment.action_groups:
        for joint in group.joints:
            full = f"{group.name}/{joint.name}"
            names = [full, full + POSITION_SUFFIX]
            if counts[joint.name] == 1:
                names += [joint.name, joint.name + POSITION_SUFFIX]
            out[full] = names
    return out


def dimension_index(
    key: str, feature: dict[str, Any] | None, embodiment: Embodiment, mapping: DatasetNames
) -> np.ndarray:
    """For each embodiment dimension, its column in the dataset vector feature ``key``."""
    dims = embodiment.action_names
    if feature is None:
        raise DatasetError("the dataset has no such feature", field=key)
    shape = list(feature.get("shape") or [])
    try:
        names = feature_names(feature)
    except DatasetError as exc:
        raise DatasetError(exc.reason, field=key) from None
    if names is not None and shape and shape != [len(names)]:
        raise DatasetError(f"shape {shape} does not fit its {len(names)} names", field=key)
    if shape != [len(dims)] and (names is None or len(names) != len(dims)):
        raise DatasetError(
            f"wrong dimension: shape {shape}, embodiment '{embodiment.name}' has "
            f"{len(dims)} actions",
            field=key,
        )
    if names is None or names == dims:
        return np.arange(len(dims))
    column = {name: i for i, name in enumerate(names)}
    spellings = _spellings(embodiment)
    index = []
    for dim in dims:
        wanted = [mapping.joints[dim]] if dim in mapping.joints else spellings[dim]
        found = [column[n] for n in wanted if n in column]
        if len(found) != 1:
            problem = "no dataset dimension" if not found else "several dataset dimensions"
            raise DatasetError(
                f"{problem} for embodiment dimension '{dim}' (looked for {wanted}; the dataset "
                f"has {names}); " + _HOW_TO_MAP.format(what="joints"),
                field=f"{key}/{dim}",
            )
        index.append(found[0])
    twice = sorted({names[i] for i in index if index.count(i) > 1})
    if twice:
        raise DatasetError(
            f"dataset dimension(s) {twice} feed several embodiment dimensions; "
            + _HOW_TO_MAP.format(what="joints"),
            field=key,
        )
    # Same count and no repeats: every dataset dimension is used exactly once.
    return np.array(index, dtype=np.int64)


def camera_keys(
    info: dict[str, Any],
    embodiment: Embodiment,
    mapping: DatasetNames,
    cameras: Sequence[str] | None,
) -> dict[str, str]:
    """Camera name -> dataset feature key, for the cameras to load.

    ``cameras=None``: the embodiment's cameras found in the dataset (a required one that
    is missing is an error); otherwise exactly those named.
    """
    stored = L.camera_features(info)

    def key_of(camera: str) -> str:
        given = mapping.cameras.get(camera, camera)
        return given if given in stored else L.image_key(given)

    def missing(camera: str, why: str) -> DatasetError:
        hint = "" if camera in mapping.cameras else "; " + _HOW_TO_MAP.format(what="cameras")
        return DatasetError(
            f"missing camera: {why}, the dataset's cameras are {sorted(stored)}{hint}",
            field=key_of(camera),
        )

    if cameras is not None:
        for camera in cameras:
            if key_of(camera) not in stored:
                raise missing(camera, "asked for")
        return {c: key_of(c) for c in cameras}
    for spec in embodiment.cameras:
        if spec.required and key_of(spec.name) not in stored:
            raise missing(spec.name, f"required by '{embodiment.name}'")
    return {c: key_of(c) for c in embodiment.camera_names if key_of(c) in stored}


def resolve_features(
    info: dict[str, Any],
    embodiment: Embodiment,
    cameras: Sequence[str] | None = None,
    names: DatasetNames | Mapping | None = None,
) -> FeatureMap:
    """Match a dataset's features to the embodiment (see the module docstring)."""
    mapping = merged_names(embodiment, names)
    features = info["features"]
    state = dimension_index(L.STATE_KEY, features.get(L.STATE_KEY), embodiment, mapping)
    action = dimension_index(L.ACTION_KEY, features.get(L.ACTION_KEY), embodiment, mapping)
    keys = camera_keys(info, embodiment, mapping, cameras)
    return FeatureMap(
        state_index=state,
        action_index=action,
        camera_keys=keys,
        camera_dtypes={key: L.camera_features(info)[key] for key in keys.values()},
    )
