"""System tests: boot the built debian-arm64 artefacts in qemu (TCG) to the ready line.

1. vmlinuz + initramfs.cpio.zst directly on qemu ``virt``;
2. the FIT through U-Boot (u-boot-qemu's qemu_arm64 as -bios, boot/ on a virtio FAT disk);
3. the Pi 3 chain on ``-M raspi3b``: the built U-Boot, the Pi 3 dtb, boot/ on the SD card,
   boot.scr and the FIT, and the SD card's partitions seen by Linux;
4. one corrupted byte in migos.itb: U-Boot refuses it and takes the fallback path.
"""

import json
import os
import re
import shutil

import pytest

from .qemu import (DIST, UBOOT_QEMU, Machine, make_boot_disk, qemu_raspi3b, qemu_virt,
                   require_dist)

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def dist():
    require_dist()
    with open(os.path.join(DIST, "manifest.json")) as f:
        return json.load(f)


def ready_line(version):
    return r"^MIGOS %s ready$" % re.escape(version)


def test_direct_kernel_initrd_boot_on_virt(dist, tmp_path):
    m = Machine(qemu_virt(kernel=os.path.join(DIST, "vmlinuz"), initrd=os.path.join(DIST, "initramfs.cpio.zst"),
                          append="console=ttyAMA0 rdinit=/init panic=10 migos.noop"),
                str(tmp_path / "console.log"))
    try:
        m.expect(ready_line(dist["version"]), timeout=120)
        assert m.wait_exit(60) == 0
        assert sum(1 for l in m.lines if re.match(ready_line(dist["version"]), l)) == 1
        assert not any("Kernel panic" in l for l in m.lines)
    finally:
        m.kill()


def test_fit_through_uboot_on_virt(dist, tmp_path):
    disk = str(tmp_path / "disk.img")
    make_boot_disk(disk, os.path.join(DIST, "boot"), size_mib=128,
                   extra_files={"migos/cmdline.env": b"migos_extra=migos.noop\n"})
    m = Machine(qemu_virt(bios=UBOOT_QEMU, disk=disk), str(tmp_path / "console.log"))
    try:
        m.expect(r"MIGOS: boot.scr " + re.escape(dist["version"]), timeout=60)
        m.expect(r"migos.itb verified, booting configuration qemu-virt", timeout=60)
        m.expect(ready_line(dist["version"]), timeout=120)
        assert m.wait_exit(60) == 0
    finally:
        m.kill()


def test_pi3_chain_on_raspi3b(dist, tmp_path):
    sd = str(tmp_path / "sd.img")
    make_boot_disk(sd, os.path.join(DIST, "boot"), size_mib=128)
    # a second partition, as on a real card: Linux must see both
    boot = os.path.join(DIST, "boot")
    append = "console=ttyAMA0 console=ttyS1,115200 rdinit=/init migos.noop"
    m = Machine(qemu_raspi3b(os.path.join(boot, "migos", "u-boot.bin"),
                             os.path.join(boot, "migos", "bcm2710-rpi-3-b.dtb"), sd, append),
                str(tmp_path / "console.log"))
    try:
        m.expect(r"MIGOS: boot.scr", timeout=90)
        m.expect(r"migos.itb verified, booting configuration rpi-3-b", timeout=120)
        m.expect(r"mmcblk0: p1", timeout=120)
        m.expect(ready_line(dist["version"]), timeout=120)
        assert m.wait_exit(60) is not None
    finally:
        m.kill()


def test_corrupt_fit_is_never_booted(dist, tmp_path):
    tree = tmp_path / "boot"
    shutil.copytree(os.path.join(DIST, "boot"), tree)
    itb = tree / "migos.itb"
    data = bytearray(itb.read_bytes())
    data[len(data) // 2] ^= 0xFF          # one byte in the middle: inside the kernel or ramdisk data
    itb.write_bytes(bytes(data))
    # the old OS's kernel entry, as `migos init` records it (here: the plain kernel + initramfs)
    shutil.copy(os.path.join(DIST, "vmlinuz"), tree / "kernel8.img")
    shutil.copy(os.path.join(DIST, "initramfs.cpio.zst"), tree / "initrd.img")
    fallback = ("fallback_kernel=kernel8.img\nfallback_initrd=initrd.img\nfallback_dtb=\nfallback_arch=arm64\n"
                "fallback_cmdline=console=ttyAMA0 rdinit=/init migos.noop oldos\n")
    disk = str(tmp_path / "disk.img")
    make_boot_disk(disk, str(tree), size_mib=256, extra_files={"migos/fallback.env": fallback.encode()})
    m = Machine(qemu_virt(bios=UBOOT_QEMU, disk=disk), str(tmp_path / "console.log"))
    try:
        m.expect(r"MIGOS: migos.itb is missing or failed verification", timeout=120)
        m.expect(r"MIGOS: falling back to the old OS kernel kernel8.img", timeout=30)
        m.expect(r"Kernel command line: .*oldos", timeout=120)
        assert not any("booting configuration" in l for l in m.lines)
    finally:
        m.kill()


def test_image_carries_wifi(dist):
    """What MIGOS needs to join the old OS's wifi on a Pi: wpa_supplicant (its libraries are
    checked by the build's ELF check) and the Pi wifi chips' firmware. qemu has no wifi
    hardware, so joining a network is tested only as far as wpa_supplicant reading the
    configuration MIGOS writes (tests/unit/test_runtime.py)."""
    import libarchive
    with libarchive.file_reader(os.path.join(DIST, "initramfs.cpio.zst")) as arc:
        names = {e.pathname.lstrip("./") for e in arc}
    assert "usr/sbin/wpa_supplicant" in names
    for chip in ("43430", "43455"):
        assert "usr/lib/firmware/brcm/brcmfmac%s-sdio.bin" % chip in names, chip
        assert any(n.startswith("usr/lib/firmware/brcm/brcmfmac%s-sdio.raspberrypi," % chip)
                   for n in names), chip
    assert "usr/lib/aarch64-linux-gnu/security/pam_unix.so" not in names   # build-only, pruned
