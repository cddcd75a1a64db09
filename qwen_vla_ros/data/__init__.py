"""Data layer (pure core, no rclpy): MCAP recordings, LeRobot v3.0 datasets, training samples.

* :mod:`.mcap_io` -- record serialised ROS 2 messages with episode marks; decode recordings.
* :mod:`.record_writer` -- the recorder's queue in front of the MCAP writer, per-topic counters.
* :mod:`.salvage` -- recover the complete messages of a recording cut off by a crash.
* :mod:`.msg_definitions` -- complete ``ros2msg`` definitions from the installed share folders.
* :mod:`.images` -- sensor_msgs Image / CompressedImage fields to RGB, and the shared resize.
* :mod:`.convert` -- recordings to a LeRobot v3.0 dataset on an embodiment's control grid
  (:mod:`.alignment`, :mod:`.commands`; gaps bridged or masked by :mod:`.gaps`).
* :mod:`.lerobot_v3` -- the atomic v3.0 writer; :mod:`.layout` the format's paths and readers;
  :mod:`.stats` LeRobot's statistics; :mod:`.feature_map` which dataset feature feeds which
  joint or camera of an embodiment (datasets from LeRobot's recorders).
* :mod:`.dataset` -- :class:`LeRobotV3Dataset`, the torch Dataset of training samples
  (imported lazily, it needs torch).
* :mod:`.synthetic` -- a small learnable synthetic dataset for tests and benchmarks.
"""

from .convert import convert_recordings
from .errors import DatasetError
from .images import ImageConversionError, compressed_to_rgb, image_to_rgb, resize_rgb
from .lerobot_v3 import EpisodeData, LeRobotV3Writer
from .mcap_io import EPISODE_TOPIC, McapEpisodeWriter, Recording, read_episode_marks, read_recording
from .msg_definitions import MessageDefinitionError, message_definition
from .synthetic import write_synthetic_dataset

__all__ = [
    "EPISODE_TOPIC",
    "DatasetError",
    "EpisodeData",
    "ImageConversionError",
    "LeRobotV3Writer",
    "McapEpisodeWriter",
    "MessageDefinitionError",
    "Recording",
    "compressed_to_rgb",
    "convert_recordings",
    "image_to_rgb",
    "message_definition",
    "read_episode_marks",
    "read_recording",
    "resize_rgb",
    "write_synthetic_dataset",
]
