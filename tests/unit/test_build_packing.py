"""Unit tests of the packing code: cpio, tarball and pyz are reproducible and complete."""

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile

import libarchive

from stages import dist, initramfs


def _tree(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_cpio_is_reproducible_sorted_owned_by_root_and_has_console(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a, {"usr/bin/x": b"x" * 100, "etc/f": b"f"})
    os.symlink("usr/bin", a / "bin")
    _tree(b, {"init": b"#!/bin/sh\n", "etc/f": b"overlay wins"})
    os.utime(a / "etc/f", (2_000_000_000, 2_000_000_000))   # newer than the epoch: clamped
    out1, out2 = str(tmp_path / "1.cpio.zst"), str(tmp_path / "2.cpio.zst")
    initramfs.write_cpio(out1, [str(a), str(b)], epoch=1_000_000_000, level=3)
    os.utime(a / "usr/bin/x", (1_500, 1_500))                # older mtimes survive; output changes
    initramfs.write_cpio(out2, [str(a), str(b)], epoch=1_000_000_000, level=3)
    assert _digest(out1) != _digest(out2)
    os.utime(a / "usr/bin/x", None)
    initramfs.write_cpio(out2, [str(a), str(b)], epoch=1_000_000_000, level=3)
    assert _digest(out1) == _digest(out2)
    entries = []
    with libarchive.file_reader(out1) as arc:
        for e in arc:
            data = b"".join(e.get_blocks()) if e.isfile else None
            entries.append((e.pathname, e.uid, e.gid, e.mtime, e.isdir, e.issym, e.ischr, data, e.linkpath))
    names = [e[0] for e in entries]
    assert names == sorted(names)
    assert all(e[1] == 0 and e[2] == 0 for e in entries)
    assert all(e[3] <= 1_000_000_000 for e in entries)
    by = {e[0]: e for e in entries}
    assert by["etc/f"][7] == b"overlay wins"
    assert by["bin"][5] and by["bin"][8] == "usr/bin"
    # and the Linux tool reads the same archive the same way
    listing = subprocess.run("zstd -dc %s | cpio -tv" % out1, shell=True, capture_output=True, text=True).stdout
    assert any(l.startswith("l") and l.endswith("bin -> usr/bin") for l in listing.splitlines())
    assert by["dev/console"][6]


def test_tarball_is_reproducible(tmp_path):
    top = tmp_path / "boot"
    _tree(top, {"config.txt": b"a", "migos/u-boot.bin": b"u"})
    t1, t2 = tmp_path / "1.tgz", tmp_path / "2.tgz"
    dist.write_tarball(str(t1), str(top), 1234)
    os.utime(top / "config.txt", (99999, 99999))
    dist.write_tarball(str(t2), str(top), 1234)
    assert t1.read_bytes() == t2.read_bytes()
    with tarfile.open(t1) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["boot", "boot/config.txt", "boot/migos", "boot/migos/u-boot.bin"]
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 1234 for m in members)


def test_pyz_runs_and_is_reproducible(tmp_path):
    p1, p2 = tmp_path / "1.pyz", tmp_path / "2.pyz"
    dist.write_pyz(str(p1), 1_700_000_000)
    dist.write_pyz(str(p2), 1_700_000_000)
    assert p1.read_bytes() == p2.read_bytes()
    out = subprocess.run([sys.executable, str(p1), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("migos ")
    names = zipfile.ZipFile(p1).namelist()
    assert "__main__.py" in names and "migos/cli.py" in names
    assert not any("__pycache__" in n for n in names)
