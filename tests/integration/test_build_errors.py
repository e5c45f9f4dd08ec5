"""Bad input to `doit build`: one line naming the problem and what to do, non-zero exit,
nothing in dist/ touched. Runs doit in this repository with its own target files
(MIGOS_TARGET_DIR) and, for signatures, a local archive on 127.0.0.1 signed by a key the
target does not trust."""

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = open(os.path.join(REPO, "multistrap", "debian-arm64.toml")).read()


def doit_build(tmp_path, name, text):
    tdir = tmp_path / "targets"
    tdir.mkdir(exist_ok=True)
    (tdir / (name + ".toml")).write_text(text.replace('name = "debian-arm64"', 'name = "%s"' % name))
    env = dict(os.environ, MIGOS_TARGET_DIR=str(tdir))
    proc = subprocess.run([sys.executable, "-m", "doit", "--db-file", str(tmp_path / "doit.db"), "build",
                           "target=" + name], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return proc


def error_lines(proc):
    return [l for l in proc.stderr.splitlines() if l.strip()]


@pytest.fixture
def cleanup_target():
    names = []
    yield names.append
    for n in names:
        for d in (os.path.join(REPO, "build", n), os.path.join(REPO, "build", "cache", n),
                  os.path.join(REPO, "dist", n)):
            shutil.rmtree(d, ignore_errors=True)


def test_unknown_target(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "doit", "--db-file", str(tmp_path / "db"), "build", "target=nope"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert error_lines(proc) == ["migos build: unknown target 'nope'; choose one of: debian-arm64" +
                                 error_lines(proc)[0].split("debian-arm64", 1)[1]]


def test_typo_in_target_file(tmp_path, cleanup_target):
    cleanup_target("typo")
    proc = doit_build(tmp_path, "typo", BASE.replace("build_only =", "bulid_only ="))
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "typo.toml: unknown key bulid_only; valid keys:" in line
    assert not os.path.exists(os.path.join(REPO, "dist", "typo"))


def test_package_that_does_not_exist(tmp_path, cleanup_target):
    cleanup_target("nopkg")
    proc = doit_build(tmp_path, "nopkg", BASE.replace('"busybox",', '"busybox", "no-such-package-migos",'))
    assert proc.returncode != 0
    (line,) = error_lines(proc)
    assert line.startswith("migos build: fetch: cannot resolve packages")
    assert "no-such-package-migos" in line and "check the package names" in line
    assert not os.path.exists(os.path.join(REPO, "dist", "nopkg"))


@pytest.fixture
def foreign_signed_archive(tmp_path):
    """A tiny archive (empty Packages) whose InRelease is signed by a throwaway key."""
    if not shutil.which("gpg"):
        pytest.fail("gpg is not installed (scripts/setup.sh installs it)")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(gpg + ["--quick-gen-key", "MIGOS test <test@invalid>", "ed25519", "sign", "1d"],
                   check=True, capture_output=True)
    root = tmp_path / "archive"
    for comp in ("main", "non-free-firmware"):
        d = root / "dists/bookworm" / comp / "binary-arm64"
        d.mkdir(parents=True)
        (d / "Packages").write_text("")
    import hashlib
    lines = ["Origin: test", "Suite: bookworm", "Codename: bookworm", "Architectures: arm64",
             "Components: main non-free-firmware", "Date: Mon, 23 Nov 2026 00:00:00 UTC", "SHA256:"]
    for comp in ("main", "non-free-firmware"):
        rel = "%s/binary-arm64/Packages" % comp
        lines.append(" %s 0 %s" % (hashlib.sha256(b"").hexdigest(), rel))
    (root / "dists/bookworm/Release").write_text("\n".join(lines) + "\n")
    subprocess.run(gpg + ["--clearsign", "-o", str(root / "dists/bookworm/InRelease"),
                          str(root / "dists/bookworm/Release")], check=True, capture_output=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    handler = lambda *a, **kw: Quiet(*a, directory=str(root), **kw)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()


def test_archive_signed_by_an_untrusted_key(tmp_path, cleanup_target, foreign_signed_archive):
    cleanup_target("badsig")
    text = BASE.replace('url = "http://deb.debian.org/debian"', 'url = "%s"' % foreign_signed_archive)
    proc = doit_build(tmp_path, "badsig", text)
    assert proc.returncode != 0
    (line,) = error_lines(proc)
    # fetch and uboot both read the archive; whichever doit runs first must stop the build
    assert re.match(r"migos build: (fetch|uboot): cannot get a verified package index from debian \(%s\)"
                    % re.escape(foreign_signed_archive), line), line
    assert "key" in line
    assert not os.path.exists(os.path.join(REPO, "build", "cache", "badsig", "archives", "busybox"))
    assert not os.path.exists(os.path.join(REPO, "dist", "badsig"))
