"""ament_python package definition; works under colcon and under pip in a virtual environment."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "qwen_vla_ros"

# Executables `ros2 run qwen_vla_ros <name>` finds; the same entry points serve pip installs.
NODES = {
    "observation_node": "qwen_vla_ros.nodes.observation_node:main",
    "inference_node": "qwen_vla_ros.nodes.inference_node:main",
    "chunk_publisher": "qwen_vla_ros.nodes.chunk_publisher_node:main",
    "sim_bridge": "qwen_vla_ros.nodes.sim_bridge_node:main",
    "recorder": "qwen_vla_ros.nodes.recorder_node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config/embodiments", glob("config/embodiments/*.yaml")),
        (f"share/{PACKAGE}/config/params", glob("config/params/*.yaml")),
        (f"share/{PACKAGE}/config/accelerate", glob("config/accelerate/*.yaml")),
        (f"share/{PACKAGE}/config/training", glob("config/training/*.yaml")),
        (f"share/{PACKAGE}/config/foxglove", glob("config/foxglove/*.json")),
        (f"share/{PACKAGE}/config/dds", glob("config/dds/*.xml")),
        # shipped checkpoints (models/<name>/..., subfolders included)
        *[
            (f"share/{PACKAGE}/{folder}", [f for f in glob(f"{folder}/*") if Path(f).is_file()])
            for folder in sorted({str(Path(f).parent) for f in glob("models/**/*", recursive=True) if Path(f).is_file()})
        ],
    ],
    install_requires=["setuptools"],
    python_requires=">=3.10",
    zip_safe=True,
    maintainer="qwen_vla_ros maintainers",
    maintainer_email="maintainers@qwen-vla-ros.invalid",
    description="Qwen-VLA (Qwen VL backbone + DiT flow-matching decoder) as ROS 2 nodes",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in NODES.items()]
        + ["qwen-vla = qwen_vla_ros.cli:main"],
    },
)
