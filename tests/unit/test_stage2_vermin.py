"""Stage 2 runs on Python >= 3.7 with the standard library (zstandard imported lazily)."""

import ast
import os
import shutil
import subprocess
import sys

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "packages", "migos", "migos", "stage2")
STDLIB = set(getattr(sys, "stdlib_module_names", ())) | {"zstandard"}


def test_vermin_37():
    vermin = shutil.which("vermin") or os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin not installed")
    proc = subprocess.run([vermin, "-t=3.7-", "--no-tips", "--violations", "--eval-annotations",
                           PKG], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stdout


def test_only_stdlib_and_lazy_zstandard():
    if not STDLIB - {"zstandard"}:
        pytest.skip("needs Python >= 3.10 for sys.stdlib_module_names")
    for name in sorted(os.listdir(PKG)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(PKG, name)).read())
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module]
            for m in mods:
                assert m.split(".")[0] in STDLIB, "%s imports %s" % (name, m)
        # zstandard only inside a function body
        for node in tree.body:
            if isinstance(node, ast.Import):
                assert all(a.name != "zstandard" for a in node.names), name
