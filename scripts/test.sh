#!/bin/bash
# Run every test tier: unit (no root), integration (root: loop devices, local HTTP servers),
# system (qemu boots of the built artefacts). Installs what it needs and builds first.
#
# Without arguments the system tier (one qemu at a time, one core) runs next to the unit and
# integration tiers (the other core), each in its own temporary directory; the second's output
# follows the first's. With arguments, pytest runs once with them over all tiers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/doit build
# debian-armhf: booted by tests/system; its .deb cache also feeds the raspbian-armhf mirror test
.venv/bin/doit build target=debian-armhf
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest -q "$@" tests/unit tests/integration tests/system
fi
mkdir -p build
log=build/tests-unit-integration.log
start=$(date +%s)
.venv/bin/python -m pytest -q -p no:cacheprovider --basetemp=build/pytest-fast \
    tests/unit tests/integration >"$log" 2>&1 &
fast=$!
set +e
.venv/bin/python -m pytest -q --basetemp=build/pytest-system tests/system
system_rc=$?
wait "$fast"
fast_rc=$?
set -e
echo "=== unit + integration (ran alongside) ==="
cat "$log"
echo "=== tests: system exit $system_rc, unit+integration exit $fast_rc, $(( $(date +%s) - start )) s ==="
[ "$system_rc" -eq 0 ] && [ "$fast_rc" -eq 0 ]
