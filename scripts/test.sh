#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, then every test.
#   bash scripts/test.sh            # extra arguments go to pytest, e.g. -k watchdog
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
# shellcheck disable=SC1091
source "${QWEN_VLA_VENV:-$REPO/.venv}/bin/activate"
cd "$REPO"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
echo "[test] ruff check"
ruff check .
echo "[test] pytest"
# pytest exits 5 when no test ran: with set -e that fails the run, as it should.
python -m pytest "$@"
