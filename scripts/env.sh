# Source me (after scripts/setup_env.sh): `. scripts/env.sh` gives this shell the venv, the colcon
# install of hamer_ros and a DDS setup confined to this machine (discovery on localhost only).
_hamer_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
export VIRTUAL_ENV=${HAMER_VENV:-${HAMER_ROS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hamer_ros}/venv}
export PATH="$VIRTUAL_ENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# colcon's setup scripts read unset variables: source them without `set -u`, then restore it.
case $- in *u*) _hamer_nounset=1; set +u ;; *) _hamer_nounset= ;; esac
# shellcheck disable=SC1091
. "${HAMER_WS:-$_hamer_root/build/ws}/install/setup.bash"
[ -n "$_hamer_nounset" ] && set -u
unset _hamer_nounset
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
# ROS_DOMAIN_ID is left as it is: an exported value wins, unset means ROS's default domain 0, so two shells that
# sourced this file see each other's nodes. Only test runs pick a domain of their own (scripts/run_tests.sh, and
# the DDS tests choose one per session), so parallel runs on one machine do not talk to each other.
unset _hamer_root
