"""On a real FAT boot partition (loop device, root): diagnostic finds the disk through the
mounts, and init + restore-boot gives back every file of the boot partition exactly."""

import json
import os
import stat
import subprocess
import time

import pytest

import os_fixtures as fx
from conftest import run_migos
from migos.stage1 import tarball

pytestmark = pytest.mark.root


def sh(*argv):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True).stdout


def boot_tree(boot):
    out = {}
    for dp, dn, fn in os.walk(boot):
        for d in dn:
            out[os.path.relpath(os.path.join(dp, d), boot) + "/"] = None
        for n in fn:
            p = os.path.join(dp, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, boot)] = f.read()
    return out


def _partition(dev, n):
    part = "%sp%d" % (dev, n)
    for i in range(40):
        if os.path.exists(part):
            return part
        if i == 10:     # no udev in some containers: ask the kernel directly
            subprocess.run(["partx", "-a", dev], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.05)
    sysdev = "/sys/block/%s/%sp%d/dev" % (os.path.basename(dev), os.path.basename(dev), n)
    if os.path.exists(sysdev):
        major, minor = open(sysdev).read().strip().split(":")
        os.mknod(part, 0o600 | stat.S_IFBLK, os.makedev(int(major), int(minor)))
        return part
    pytest.skip("the kernel shows no partitions of %s" % dev)


def _fs_available(name):
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == name for line in f if line.strip())


@pytest.fixture
def loopdisk(tmp_path, needs_root):
    img = fx.make_disk_image(str(tmp_path / "disk.img"), p1_sectors=131072)   # 64 MiB p1
    dev = sh("losetup", "--show", "-f", "-P", img).strip()
    try:
        yield dev, _partition(dev, 1)
    finally:
        subprocess.run(["losetup", "-d", dev])


def mount_fat(part, boot):
    """Mount with the kernel's vfat. (fusefat is no substitute: it refuses to extend an
    existing file, which every FAT driver the firmware's users write with can do.)"""
    if not _fs_available("vfat"):
        pytest.skip("this kernel has no vfat file system (see /proc/filesystems)")
    sh("mount", "-t", "vfat", part, boot)


def umount(boot):
    subprocess.run(["umount", boot], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def fatboot(loopdisk, tmp_path):
    dev, part = loopdisk
    sh("mkfs.vfat", "-F", "32", "-n", "boot", part)
    root = str(tmp_path / "root")
    fx.make_tree(root, "buster", boot_dir=False)
    boot = os.path.join(root, "boot")
    os.makedirs(boot)
    mount_fat(part, boot)
    try:
        fx.make_tree(root, "buster", boot_dir=boot)
        sh("sync")
        yield dev, part, root, boot
    finally:
        umount(boot)


def test_disk_behind_the_boot_mount_is_found(loopdisk, tmp_path):
    """mountinfo -> /sys/dev/block -> the parent disk (any kernel file system will do for
    the lookup; FAT itself may be missing from this kernel)."""
    from migos.stage1 import disk
    dev, part = loopdisk
    fs = "vfat" if _fs_available("vfat") else "ext2"
    sh("mkfs.vfat" if fs == "vfat" else "mkfs.ext2", *([] if fs == "vfat" else ["-q"]), part)
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    sh("mount", "-t", fs, part, mnt)
    try:
        assert disk.boot_disk("/", mnt) == (dev, 1, fs)
        info = disk.geometry(dev, 1)
        assert info["problems"] == [] and info["size"] == 4 * 1000 ** 3
    finally:
        umount(mnt)


def test_init_restore_round_trip_on_fat(fatboot, tmp_path):
    dev, part, root, boot = fatboot
    cfg = fx.config_json(str(tmp_path / "config.json"))
    tar = tarball.make_fake(str(tmp_path / "tar"), itb=os.urandom(3 * 1024 * 1024))
    before = boot_tree(boot)
    assert "boot.scr" in before     # a colliding file of the old OS, backed up and given back
    r = run_migos("diagnostic", "--root", root, "-c", cfg, "--disk", dev, "--no-api-check",
                  "--no-vpn-check", "--log-level", "error")
    assert r.returncode == 0, r.stdout
    r = run_migos("init", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
                  "--disk", dev, "--no-api-check", "--no-vpn-check", "--log-level", "error")
    assert r.returncode == 0, r.stderr
    mid = boot_tree(boot)
    assert mid["boot.scr"] != before["boot.scr"] and "migos.itb" in mid
    assert mid["migos/backup/boot.scr"] == before["boot.scr"]
    assert mid["config.txt"].startswith(before["config.txt"])
    assert b"\n[all]\n\nos_prefix=migos/\n" in mid["config.txt"]
    # the file system is clean, and after remounting the files read the same
    umount(boot)
    fsck = subprocess.run(["fsck.vfat", "-n", part], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert fsck.returncode == 0, fsck.stdout
    mount_fat(part, boot)
    assert boot_tree(boot) == mid
    r = run_migos("restore-boot", "--root", root, "--log-level", "error")
    assert r.returncode == 0, r.stderr
    umount(boot)
    fsck = subprocess.run(["fsck.vfat", "-n", part], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert fsck.returncode == 0, fsck.stdout
    mount_fat(part, boot)
    assert boot_tree(boot) == before


def test_init_result_is_valid_on_fat_via_mtools(loopdisk, tmp_path):
    """Runs where the kernel has no vfat: init's file tree is copied onto the loop device's
    FAT p1 with mtools, checked by fsck.vfat, read back, and must be byte-identical (names
    are FAT-legal and unique ignoring case); then restore-boot gives the old tree back."""
    import shutil
    if not shutil.which("mcopy"):
        pytest.skip("mtools is not installed")
    dev, part = loopdisk
    sh("mkfs.vfat", "-F", "32", "-n", "boot", part)
    root = fx.make_tree(str(tmp_path / "root"), "buster")
    boot = os.path.join(root, "boot")
    before = boot_tree(boot)
    cfg = fx.config_json(str(tmp_path / "config.json"))
    tar = tarball.make_fake(str(tmp_path / "tar"))
    r = run_migos("init", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
                  "--disk", dev, "--no-api-check", "--no-vpn-check", "--log-level", "error")
    assert r.returncode == 0, r.stderr
    mid = boot_tree(boot)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mcopy", "-i", part, "-s", "-Q"] + [os.path.join(boot, n) for n in
                                                             sorted(os.listdir(boot))] + ["::/"],
                   check=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fsck = subprocess.run(["fsck.vfat", "-n", part], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert fsck.returncode == 0, fsck.stdout
    back = str(tmp_path / "back")
    os.makedirs(back)
    subprocess.run(["mcopy", "-i", part, "-s", "-n", "-Q", "::/*", back + "/"], check=True,
                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert boot_tree(back) == mid
    r = run_migos("restore-boot", "--root", root, "--log-level", "error")
    assert r.returncode == 0, r.stderr
    assert boot_tree(boot) == before
