"""Reading and writing policy checkpoints safely.

A policy folder holds::

    policy_config.json      decoder shape, inference settings, format version
    decoder.safetensors     action decoder weights
    normalization.json      statistics per embodiment name (model units)
    backbone/               Hugging Face model + tokenizer + processor (save_pretrained)

Weights are only ever read from safetensors. A pickle (``torch.save``) file is
refused with an explanation instead of being unpickled, and every safetensors
file's header is checked against its size before loading so a truncated
download is named as such.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

CONFIG_FILE = "policy_config.json"
DECODER_FILE = "decoder.safetensors"
NORMALIZATION_FILE = "normalization.json"
BACKBONE_DIR = "backbone"
FORMAT_VERSION = 1

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def resolve_checkpoint_dir(dir_or_hub_id: str | Path) -> Path:
    """A local folder as is; ``owner/name`` goes through ``huggingface_hub.snapshot_download``."""
    path = Path(dir_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; a policy checkpoint is a folder")
    if not _HUB_ID.match(str(dir_or_hub_id)):
        raise CheckpointError(
            f"{dir_or_hub_id}: no such folder, and not a hub id of the form owner/name"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(dir_or_hub_id)))
    except (OSError, ValueError) as error:  # hub errors derive from these (HTTP, offline, id)
        raise CheckpointError(
            f"{dir_or_hub_id}: not a local folder, and fetching it from the hub failed: {error}"
        ) from error


def check_safetensors_file(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete safetensors file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(9)
        # a safetensors header is JSON right after its 8-byte length; only without that can the
        # first bytes be a pickle's (a length such as 0x0280 starts with the same bytes)
        if head[8:9] != b"{" and head.startswith(_PICKLE_MAGIC):
            raise CheckpointError(
                f"{path}: this is a pickle (torch.save) file, not safetensors; pickles can run "
                "arbitrary code and are not loaded. Convert it with torch.load(..., "
                "weights_only=True) and safetensors.torch.save_file"
            )
        if len(head) < 9:
            raise CheckpointError(f"{path}: truncated ({size} bytes), not a safetensors file")
        header_size = struct.unpack("<Q", head[:8])[0]
        if header_size > size - 8:
            raise CheckpointError(
                f"{path}: truncated or not safetensors (header claims {header_size} bytes)"
            )
        try:
            header = json.loads(head[8:] + handle.read(header_size - 1))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path}: corrupt safetensors header ({error})") from error
    try:
        data_end = max(
            (
                int(entry["data_offsets"][1])
                for key, entry in header.items()
                if key != "__metadata__"
            ),
            default=0,
        )
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: corrupt safetensors header ({error!r})") from error
    if 8 + header_size + data_end > size:
        raise CheckpointError(
            f"{path}: truncated: tensors need {8 + header_size + data_end} bytes, file has {size}"
        )


def save_decoder(path: Path, module: torch.nn.Module) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def load_decoder(path: Path, module: torch.nn.Module) -> None:
    """Load safetensors weights into ``module``; names and shapes must match exactly."""
    check_safetensors_file(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: corrupt safetensors file ({error})") from error
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{path}: weights do not fit the decoder in {CONFIG_FILE}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatch {mismatched[:5]}"
        )
    module.load_state_dict(tensors)


def check_backbone_files(directory: Path) -> None:
    """The backbone folder exists and its weight files are complete safetensors."""
    if not (directory / "config.json").is_file():
        raise CheckpointError(
            f"{directory}: no backbone config.json (was the policy saved completely?)"
        )
    pickles = sorted(p.name for p in directory.glob("*.bin")) + sorted(
        p.name for p in directory.glob("*.pt")
    )
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(
            f"{directory}: no safetensors weights"
            + (f"; found pickle files {pickles}, which are not loaded" if pickles else "")
        )
    for path in weights:
        check_safetensors_file(path)


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=1, sort_keys=True))


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; is this a QwenVLAPolicy checkpoint folder?")
    try:
        payload = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return payload
