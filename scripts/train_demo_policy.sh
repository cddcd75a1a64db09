#!/usr/bin/env bash
# Regenerate the demo policy (models/sim_demo) from scratch with the package's own pipeline:
# scripted demonstrations in the simulator -> training (config/training/sim_demo.yaml) ->
# closed-loop evaluation through the ROS graph on seeds the demonstrations never used.
#
#   bash scripts/train_demo_policy.sh              # data in data/sim_demos, run in runs/sim_demo
#   OUT=runs/try2 EVAL_EPISODES=50 bash scripts/train_demo_policy.sh
# The datasets and their weights are listed in config/training/sim_demo.yaml.
#
# About 10 minutes of data, 60 to 75 minutes of training and 5 minutes of evaluation per 10
# episodes and task on 2 CPU cores (docs/training.md has the measured figures). Copy
# $OUT/final to models/sim_demo to ship it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
# shellcheck disable=SC1091
source "${QWEN_VLA_VENV:-$REPO/.venv}/bin/activate"
cd "$REPO"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
DATA=data/sim_demos  # where config/training/sim_demo.yaml reads them
OUT="${OUT:-runs/sim_demo}"
EVAL_EPISODES="${EVAL_EPISODES:-10}"

# 1. Scripted demonstrations (seeds 0..N-1; evaluation uses seeds from 100000 on).
for spec in "pick_color 70" "drive_to_color 80" "transfer_cube 45" "insertion 30"; do
  set -- $spec
  if [ -f "$DATA/$1/meta/info.json" ]; then
    echo "[recipe] $DATA/$1 exists: kept (delete it to collect again)"
  else
    qwen-vla collect --task "$1" --episodes "$2" --out "$DATA/$1"
  fi
done

# 2. Train one policy for every task and both robots (the dataset paths are in the config).
qwen-vla train --stage config/training/sim_demo.yaml --init small --output "$OUT" --no-progress

# 3. Closed-loop evaluation through the ROS graph, per task.
for task in pick_color transfer_cube insertion drive_to_color; do
  qwen-vla eval --task "$task" --model "$OUT/final" --episodes "$EVAL_EPISODES" --output "$OUT/eval-$task" --video 1
done
echo "[recipe] done: policy in $OUT/final, evaluations in $OUT/eval-*/eval.json"
