"""System tests: boot the built debian-armhf artefacts in qemu-system-arm (TCG) to the ready line.

1. vmlinuz (Debian's armmp zImage) + initramfs.cpio.zst directly on qemu ``virt`` (cortex-a15);
2. the FIT through U-Boot on ``virt`` (u-boot-qemu's qemu_arm as -bios, boot/ on a virtio FAT disk):
   boot.scr, the hash check and the qemu-virt configuration with the 32-bit load addresses.

Not here: the Pi 2 chain on ``-M raspi2b``. The built rpi_2 U-Boot starts there (loaded at
0x8000 with ``-device loader``), identifies "RPI 2 Model B" and finds the SD card, but qemu
starts all four cores in it and U-Boot's ``usb start`` dies on an undefined instruction.
"""

import json
import os
import re

import pytest

from .qemu import UBOOT_QEMU_ARM, Machine, dist_dir, make_boot_disk, qemu_virt, require_dist

pytestmark = pytest.mark.system
DIST = dist_dir("debian-armhf")


@pytest.fixture(scope="module")
def dist():
    require_dist("debian-armhf", "qemu-system-arm")
    with open(os.path.join(DIST, "manifest.json")) as f:
        return json.load(f)


def ready_line(version):
    return r"^MIGOS %s ready$" % re.escape(version)


def test_manifest_is_armhf(dist):
    assert dist["target"] == "debian-armhf" and dist["architecture"] == "armhf"
    names = {p["name"] for p in dist["packages"]}
    assert {"busybox", "python3"} <= names
    assert all(p["arch"] in ("armhf", "all") for p in dist["packages"])


def test_direct_kernel_initrd_boot_on_virt(dist, tmp_path):
    m = Machine(qemu_virt(kernel=os.path.join(DIST, "vmlinuz"), initrd=os.path.join(DIST, "initramfs.cpio.zst"),
                          append="console=ttyAMA0 rdinit=/init panic=10 migos.noop", arch="armhf"),
                str(tmp_path / "console.log"))
    try:
        m.expect(r"Linux version \S+-armmp ", timeout=60)
        m.expect(ready_line(dist["version"]), timeout=180)
        assert m.wait_exit(60) == 0
        assert sum(1 for l in m.lines if re.match(ready_line(dist["version"]), l)) == 1
        assert not any("Kernel panic" in l for l in m.lines)
    finally:
        m.kill()


def test_fit_through_uboot_on_virt(dist, tmp_path):
    if not os.path.exists(UBOOT_QEMU_ARM):
        pytest.fail("%s is missing; install u-boot-qemu" % UBOOT_QEMU_ARM)
    disk = str(tmp_path / "disk.img")
    make_boot_disk(disk, os.path.join(DIST, "boot"), size_mib=128,
                   extra_files={"migos/cmdline.env": b"migos_extra=migos.noop\n"})
    m = Machine(qemu_virt(bios=UBOOT_QEMU_ARM, disk=disk, arch="armhf"), str(tmp_path / "console.log"))
    try:
        m.expect(r"MIGOS: boot.scr " + re.escape(dist["version"]), timeout=60)
        m.expect(r"migos.itb verified, booting configuration qemu-virt", timeout=60)
        m.expect(ready_line(dist["version"]), timeout=180)
        assert m.wait_exit(60) == 0
    finally:
        m.kill()

