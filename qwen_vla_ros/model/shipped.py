"""Checkpoints that ship with the package, by name (``model:=sim_demo``)."""

from __future__ import annotations

from pathlib import Path

#: The demo policy trained by ``scripts/train_demo_policy.sh`` on scripted demonstrations:
#: every simulated task (transfer_cube, insertion, pick_color, drive_to_color) on both
#: simulated robots (aloha_sim, mobile_base), one set of weights.
SIM_DEMO = "sim_demo"
SHIPPED_MODELS = (SIM_DEMO,)
#: Embodiments the shipped demo policy has statistics for (the default model of demo/eval).
SIM_EMBODIMENTS = ("aloha_sim", "mobile_base")


def shipped_model_dir(name: str) -> Path:
    """The folder of a shipped checkpoint (source tree, or the installed share/ folder)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"no shipped model {name!r}; shipped: {SHIPPED_MODELS}")
    here = Path(__file__).resolve().parents[2] / "models" / name
    if (here / "policy_config.json").is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("qwen_vla_ros")) / "models" / name
        if (installed / "policy_config.json").is_file():
            return installed
    except Exception:  # noqa: BLE001 - no ament index, or the package is not installed
        pass
    raise FileNotFoundError(f"the shipped model {name!r} is missing (looked in {here} and share/qwen_vla_ros/models)")
