#!/usr/bin/env bash
# The README's test command (via `make test`): set everything up on a fresh machine, make the test data,
# run the whole suite. Extra arguments go to pytest (e.g. scripts/run_tests.sh -k mano).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/setup_env.sh
# shellcheck disable=SC1091
. scripts/env.sh
python scripts/prepare_test_data.py
export HAMER_ROS_REQUIRE_TEST_DATA=1          # missing test data fails instead of skipping
# Tests only: a random ROS domain unless one is exported, so two test runs on one machine stay apart.
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}
set +e
pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
