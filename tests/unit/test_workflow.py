"""The GitHub Actions workflow cannot run here (no GitHub). What can be checked offline: it
is valid against the GitHub workflow schema (the copy vendored in check-jsonschema), runs
the README's test command (.ci/run), builds every target under multistrap/, and may write
the release it publishes."""

import glob
import os
import subprocess
import sys

from tests.conftest import REPO

WORKFLOW = os.path.join(REPO, ".github", "workflows", "build.yml")


def text():
    with open(WORKFLOW) as f:
        return f.read()


def test_valid_against_the_workflow_schema():
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows", WORKFLOW], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert proc.returncode == 0, proc.stdout


def test_schema_check_can_fail(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(text().replace("runs-on:", "runs_on:"))
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows", str(bad)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    assert proc.returncode != 0


def test_runs_what_ci_runs_and_builds_every_target():
    wf = text()
    assert "bash .ci/run" in wf
    assert "for t in multistrap/*.toml" in wf and glob.glob(os.path.join(REPO, "multistrap", "*.toml"))
    assert "bash scripts/setup.sh" in wf
    assert "contents: write" in wf          # softprops/action-gh-release needs it
