"""A mirror that lies is refused before anything is unpacked, naming the archive.

Each test serves a two-archive copy of the raspbian-armhf layout on 127.0.0.1 (archive
``raspbian`` with the cached Debian armhf .debs of debian-armhf's root, archive
``raspberrypi`` empty), signed by a throwaway key generated here, and runs
``doit build target=sigNAME mirror=raspbian=…,raspberrypi=…`` with a target file whose
keyrings are that key. Then it breaks one thing: a tampered Packages file, an InRelease
signed by another key, an expired signature, a .deb whose hash does not match. apt
(``update --error-on=any``, then its hash checks on download) must stop the build with
one line naming the archive; no root is unpacked.

Needs debian-armhf's download cache (``doit build target=debian-armhf``; scripts/test.sh
builds it first).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.apt_mirror import Archive, Key, serve

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARMHF_PACKAGES = os.path.join(REPO, "build", "debian-armhf", "fetch", "packages.json")


@pytest.fixture(scope="module")
def root_debs():
    if not os.path.exists(ARMHF_PACKAGES):
        pytest.fail("build/debian-armhf is not built; run `doit build target=debian-armhf` first")
    with open(ARMHF_PACKAGES) as f:
        return [p["deb"] for p in json.load(f)["root"]]


@pytest.fixture(scope="module")
def good_key(tmp_path_factory):
    return Key(str(tmp_path_factory.mktemp("gpg-good")))


def target_text(keyring):
    """raspbian-armhf with busybox only (fast) and both keyrings replaced by the test key."""
    with open(os.path.join(REPO, "multistrap", "raspbian-armhf.toml")) as f:
        text = f.read()
    for key, value in (("packages", '["busybox"]'), ("build_only", "[]"), ("extract", '["busybox"]'),
                       ("firmware", "[]")):      # arrays may span lines
        text, n = re.subn(r'(?ms)^%s = \[.*?\]' % key, '%s = %s' % (key, value), text)
        assert n == 1, key
    text = re.sub(r'(?m)^keyring = .*$', 'keyring = "%s"' % keyring, text)
    assert text.count(keyring) == 2
    return text


class Mirror:
    def __init__(self, tmp_path, debs, key):
        self.root = tmp_path / "mirror"
        self.raspbian = Archive(str(self.root / "raspbian"))
        self.raspbian.add("main", debs)
        self.rpi = Archive(str(self.root / "debian"))
        self.rpi.add("main", [])
        self.key = key
        self.url, self.stop = serve(str(self.root))

    def publish(self, key=None, sign_extra=()):
        self.raspbian.publish(key or self.key, sign_extra)
        self.rpi.publish(key or self.key, sign_extra)

    @property
    def raspbian_url(self):
        return self.url + "/raspbian"

    def mirror_arg(self):
        return "mirror=raspbian=%s,raspberrypi=%s/debian" % (self.raspbian_url, self.url)


@pytest.fixture
def mirror(tmp_path, root_debs, good_key):
    m = Mirror(tmp_path, root_debs, good_key)
    yield m
    m.stop()


def build(tmp_path, name, keyring, mirror, task="rootfs"):
    """``doit TASK`` (rootfs: fetch, then unpack) for a test target; (process, unpacked?, cached .debs)."""
    tdir = tmp_path / "targets"
    tdir.mkdir(exist_ok=True)
    (tdir / (name + ".toml")).write_text(target_text(keyring).replace('name = "raspbian-armhf"', 'name = "%s"' % name))
    env = dict(os.environ, MIGOS_TARGET_DIR=str(tdir))
    for d in ("build", "build/cache", "dist"):
        shutil.rmtree(os.path.join(REPO, d, name), ignore_errors=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "doit", "--db-file", str(tmp_path / "doit.db"), task,
                               "target=" + name, mirror.mirror_arg()], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        unpacked = os.path.exists(os.path.join(REPO, "build", name, "rootfs.tmp")) or \
            os.path.exists(os.path.join(REPO, "build", name, "rootfs"))
        cached = sorted(os.path.basename(p) for p in
                        glob.glob(os.path.join(REPO, "build", "cache", name, "archives", "*.deb")))
        return proc, unpacked, cached
    finally:
        for d in ("build", "build/cache", "dist"):
            if not os.environ.get("MIGOS_TEST_KEEP"):
                shutil.rmtree(os.path.join(REPO, d, name), ignore_errors=True)


def one_error(proc):
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert len(lines) == 1, lines
    return lines[0]


def test_good_mirror_fetches(tmp_path, mirror, good_key):
    """The control: the same mirror, untouched, fetches (so the failures below are real)."""
    mirror.publish()
    proc, unpacked, cached = build(tmp_path, "sigok", good_key.export(str(tmp_path / "k.gpg")), mirror,
                                   task="fetch")
    assert proc.returncode == 0, proc.stderr
    assert any(c.startswith("busybox_") for c in cached) and any(c.startswith("libc6_") for c in cached)


def test_tampered_packages_file(tmp_path, mirror, good_key):
    mirror.publish()
    packages = mirror.raspbian.path("dists", "bookworm", "main", "binary-armhf", "Packages")
    text = open(packages).read()
    paras = text.split("\n\n")
    paras = [p.replace("\nVersion: ", "\nVersion: 9:") if p.startswith("Package: busybox\n") else p for p in paras]
    open(packages, "w").write("\n\n".join(paras))      # a newer busybox nobody signed
    assert open(packages).read() != text
    proc, unpacked, cached = build(tmp_path, "sigpkgs", good_key.export(str(tmp_path / "k.gpg")), mirror)
    line = one_error(proc)
    assert line.startswith("migos build: fetch: cannot get a verified package index from raspbian (%s): "
                           % mirror.raspbian_url), line
    assert "Packages" in line and ("Hash Sum mismatch" in line or "unexpected size" in line), line
    assert not unpacked and cached == []


def test_release_signed_by_another_key(tmp_path, mirror, good_key):
    other = Key(str(tmp_path / "gpg-other"), uid="Someone else <other@invalid>")
    mirror.raspbian.publish(other)
    mirror.rpi.publish(good_key)
    proc, unpacked, cached = build(tmp_path, "sigother", good_key.export(str(tmp_path / "k.gpg")), mirror)
    line = one_error(proc)
    assert line.startswith("migos build: fetch: cannot get a verified package index from raspbian (%s): "
                           % mirror.raspbian_url), line
    assert "NO_PUBKEY" in line or "not signed" in line, line
    assert not unpacked and cached == []


def test_expired_signature(tmp_path, mirror):
    # a key made "in 2020" that signs with a one-day signature lifetime: expired since 2020-01-02
    old = Key(str(tmp_path / "gpg-old"), expire="never", faked_time="20200101T000000")
    mirror.raspbian.publish(old, sign_extra=("--default-sig-expire", "1d"))
    mirror.rpi.publish(old, sign_extra=("--default-sig-expire", "1d"))
    out = subprocess.run(["gpg", "--homedir", old.home, "--batch", "--verify",
                          mirror.raspbian.path("dists", "bookworm", "InRelease")], capture_output=True, text=True)
    assert "expired" in out.stderr.lower(), out.stderr
    proc, unpacked, cached = build(tmp_path, "sigexp", old.export(str(tmp_path / "k.gpg")), mirror)
    line = one_error(proc)
    assert re.match(r"migos build: fetch: cannot get a verified package index from (raspbian|raspberrypi) \(",
                    line), line
    assert "EXPSIG" in line or "expired" in line.lower(), line
    assert not unpacked and cached == []


def test_package_whose_hash_does_not_match(tmp_path, mirror, good_key):
    mirror.publish()
    (deb,) = glob.glob(mirror.raspbian.path("pool", "main", "b", "busybox", "busybox_*.deb"))
    data = bytearray(open(deb, "rb").read())
    data[len(data) // 2] ^= 0xFF                       # same size, one byte different
    os.unlink(deb)                                     # a hard link to the cache: replace, do not edit
    open(deb, "wb").write(bytes(data))
    proc, unpacked, cached = build(tmp_path, "sighash", good_key.export(str(tmp_path / "k.gpg")), mirror)
    line = one_error(proc)
    assert line.startswith("migos build: fetch: cannot download verified packages from raspbian (%s): "
                           % mirror.raspbian_url), line
    assert "busybox" in line and "Hash Sum mismatch" in line, line
    assert not unpacked and not any(c.startswith("busybox_") for c in cached)
