#!/bin/bash
# Run every test tier: unit (no root), integration (root: loop devices, local HTTP servers),
# system (qemu boots of the built artefacts). Installs what it needs and builds first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/doit build
# debian-armhf: booted by tests/system; its .deb cache also feeds the raspbian-armhf mirror test
.venv/bin/doit build target=debian-armhf
exec .venv/bin/python -m pytest -q "$@" tests/unit tests/integration tests/system
