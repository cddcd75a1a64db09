#!/usr/bin/env bash
# Regenerate the demo policy (models/sim_demo) from scratch with the package's own pipeline:
# scripted demonstrations in the simulator -> training in four phases -> closed-loop evaluation
# through the ROS graph on seeds the demonstrations never used.
#
#   bash scripts/train_demo_policy.sh              # data in data/sim_demos, run in runs/sim_demo
#   OUT=runs/try2 EVAL_EPISODES=50 bash scripts/train_demo_policy.sh
#
# Phase 1 (config/training/sim_demo_recipe.yaml) trains a random `small` policy whole: backbone,
# flow decoder with relative arm-joint actions, key-pose head and grounding pointer, on every
# task's demonstrations and on scenes rendered during training. Phase 2
# (sim_demo_recipe_head.yaml) freezes the backbone and teaches the key-pose head the named
# object's place and the decoder to act on the key pose. Phase 3 (sim_demo_recipe_base.yaml)
# does the same with the mobile base's scenes too (the named box in its front camera). Phase 4
# (`qwen-vla refit-key-pose`, sim_demo_recipe_key_pose.yaml) refits the key-pose head alone on
# thousands of rendered scenes, their backbone features cached once. The datasets and their
# weights are in phase 1's config. docs/training.md ("The recipe") has the
# measured figures on 2 CPU cores; copy $OUT/final to models/sim_demo to ship a better policy.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
# shellcheck disable=SC1091
source "${QWEN_VLA_VENV:-$REPO/.venv}/bin/activate"
cd "$REPO"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
DATA=data/sim_demos  # where config/training/sim_demo_recipe.yaml reads them
OUT="${OUT:-runs/sim_demo}"
EVAL_EPISODES="${EVAL_EPISODES:-10}"

# 1. Scripted demonstrations (task, episodes, first seed, folder); evaluation uses seeds from
#    100000 on, which collect refuses. A collector keeps one core busy (MuJoCo, IK, encoding):
#    two lists run side by side, about 14 minutes on 2 cores.
collect_list() {
  for spec in "$@"; do
    set -- $spec
    if [ -f "$DATA/$4/meta/info.json" ]; then
      echo "[recipe] $DATA/$4 exists: kept (delete it to collect again)"
    else
      qwen-vla collect --task "$1" --episodes "$2" --first-seed "$3" --out "$DATA/$4"
    fi
  done
}
collect_list "pick_color 230 70 pick_color_more" "drive_to_color 80 0 drive_to_color" \
             "insertion 30 0 insertion" "drive_to_color 320 80 drive_to_color_more" &
first=$!
trap 'kill "$first" 2>/dev/null || true' EXIT  # the other list stops too if this one fails
collect_list "pick_color 70 0 pick_color" "transfer_cube 45 0 transfer_cube" \
             "transfer_cube 105 45 transfer_cube_more"
wait "$first"  # set -e: a failed collector stops the recipe here

# 2. Train one policy for every task and both robots, in four phases.
qwen-vla train --stage config/training/sim_demo_recipe.yaml --init small --output "$OUT/phase1" --no-progress
qwen-vla train --stage config/training/sim_demo_recipe_head.yaml --init "$OUT/phase1/final" --output "$OUT/phase2" --no-progress
qwen-vla train --stage config/training/sim_demo_recipe_base.yaml --init "$OUT/phase2/final" --output "$OUT/phase3" --no-progress
qwen-vla refit-key-pose --init "$OUT/phase3/final" --output "$OUT" --config config/training/sim_demo_recipe_key_pose.yaml

# 3. Closed-loop evaluation through the ROS graph, per task.
for task in pick_color transfer_cube insertion drive_to_color; do
  qwen-vla eval --task "$task" --model "$OUT/final" --episodes "$EVAL_EPISODES" --output "$OUT/eval-$task" --video 1
done
echo "[recipe] done: policy in $OUT/final, evaluations in $OUT/eval-*/eval.json"
