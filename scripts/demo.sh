#!/usr/bin/env bash
# Set up (if needed) and run the main job: the simulated ALOHA with the whole node graph.
#   bash scripts/demo.sh                       # extra arguments go to `qwen-vla demo`
#   bash scripts/demo.sh --seconds 20 --instruction "insert the peg into the socket" --task insertion
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
# shellcheck disable=SC1091
source "${QWEN_VLA_VENV:-$REPO/.venv}/bin/activate"
cd "$REPO"
# Keep the demo's DDS traffic on this machine unless the user chose otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
exec qwen-vla demo "$@"
