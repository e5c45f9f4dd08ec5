"""Shared test helpers: the three tiers (unit, integration, system) live in sub-folders."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIGOS_PKG = os.path.join(REPO, "packages", "migos")


def migos_cmd(*args):
    """argv that runs the in-tree ``migos`` command with this interpreter."""
    return [sys.executable, "-m", "migos"] + [str(a) for a in args]


def run_migos(*args, check=False, **kw):
    env = dict(os.environ, PYTHONPATH=MIGOS_PKG)
    return subprocess.run(migos_cmd(*args), env=env, universal_newlines=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=check, **kw)


@pytest.fixture
def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, mounts)")
