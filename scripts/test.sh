#!/bin/bash
# Run every test tier: unit (no root), integration (root: loop devices, local HTTP servers),
# system (qemu boots of the built artefacts). Installs what it needs and builds first.
#
# Without arguments two streams run side by side, one per core, each pytest in its own
# temporary directory: the migration system tests (qemu, the longest: the power-cut chain) on
# one; unit, integration, then the other system tests (boots, the raspbian mirror) on the
# other. The second stream's output follows the first's. With arguments, pytest runs once with
# them over all tiers.
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
log=build/tests-second-stream.log
start=$(date +%s)
(
    rc=0
    .venv/bin/python -m pytest -q -p no:cacheprovider --basetemp=build/pytest-fast \
        tests/unit tests/integration || rc=$?
    .venv/bin/python -m pytest -q -p no:cacheprovider --basetemp=build/pytest-boot \
        tests/system --ignore tests/system/test_migration.py || rc=$?
    exit $rc
) >"$log" 2>&1 &
second=$!
set +e
.venv/bin/python -m pytest -q --basetemp=build/pytest-system tests/system/test_migration.py
migration_rc=$?
wait "$second"
second_rc=$?
set -e
echo "=== unit + integration, then the boot and mirror system tests (ran alongside) ==="
cat "$log"
echo "=== tests: migration exit $migration_rc, second stream exit $second_rc, $(( $(date +%s) - start )) s ==="
[ "$migration_rc" -eq 0 ] && [ "$second_rc" -eq 0 ]
