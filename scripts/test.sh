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
mkdir -p build
# debian-armhf: booted by tests/system; its .deb cache also feeds the raspbian-armhf mirror test.
# Built next to debian-arm64 (their own doit databases and caches; emulated configuration is
# single-threaded), its output printed after.
.venv/bin/doit build target=debian-armhf >build/build-debian-armhf.log 2>&1 &
armhf=$!
arm64_rc=0
.venv/bin/doit build || arm64_rc=$?
armhf_rc=0
wait "$armhf" || armhf_rc=$?
echo "=== doit build target=debian-armhf (ran alongside) ==="
cat build/build-debian-armhf.log
[ "$arm64_rc" -eq 0 ] && [ "$armhf_rc" -eq 0 ] || { echo "build failed"; exit 1; }
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest -q "$@" tests/unit tests/integration tests/system
fi
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
