"""raspbian-armhf, built from a signed local mirror shaped like its two archives, boots in qemu.

Raspbian's and Raspberry Pi's archives are unreachable here, so this test makes both on
127.0.0.1 and builds the real ``multistrap/raspbian-armhf.toml`` from them with
``doit build target=raspbian-armhf mirror=raspbian=URL,raspberrypi=URL``. The only change
to the target is its two keyrings: a copy of the target file (MIGOS_TARGET_DIR) names a
throwaway OpenPGP key generated here, which signs both InRelease files. Signature and
hash checking stay exactly as in a real build (there is no switch to turn them off).

* archive ``raspbian`` (``/raspbian``, bookworm main): the Debian 12 armhf .debs of
  debian-armhf's root (same package names as Raspbian's), plus Debian's ``u-boot``
  source package (Raspbian rebuilds Debian's) for the U-Boot step;
* archive ``raspberrypi`` (``/debian``, bookworm main): ``raspberrypi-kernel`` and
  ``raspberrypi-bootloader``.

STAND-IN, the one place in the test suite: Raspberry Pi's kernel and bootloader packages
cannot be downloaded here, so the two packages are built with ``dpkg-deb -b`` from Debian's
cached ``linux-image-*-armmp`` and ``raspi-firmware``: the armmp zImage as /boot/kernel7.img,
its upstream dtbs under the firmware's names (bcm2709-rpi-2-b.dtb, …) in /boot, its modules
as /lib/modules/RELEASE-v7+, the firmware blobs in /boot — the paths the real packages use,
so the build's ``raspberrypi`` kernel layout is exercised. What this cannot prove: that a
real Raspberry Pi kernel boots (it would not boot on qemu ``virt`` at all), and module
loading in the booted image (the stand-in's module directory is RELEASE-v7+ while the armmp
kernel calls itself RELEASE, so modprobe finds nothing; /init tolerates that).

Everything else (busybox, python3, the /init, the FIT, U-Boot) is what a real Raspbian
build produces from the same package names. Built once per test run (module fixture).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib

import pytest

from migos import boards
from tests.apt_mirror import Archive, Key, raspberrypi_standins, serve

from .qemu import REPO, Machine, dist_dir, qemu_virt

pytestmark = pytest.mark.system
NAME = "raspbian-armhf"
DIST = dist_dir(NAME)
ARMHF = os.path.join(REPO, "build", "debian-armhf")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("raspbian")
    packages = os.path.join(ARMHF, "fetch", "packages.json")
    if not os.path.exists(packages):
        pytest.fail("build/debian-armhf is not built; run `doit build target=debian-armhf` first")
    with open(packages) as f:
        fetched = json.load(f)
    # the root set, plus the wifi firmware both targets extract
    root = [p["deb"] for p in fetched["root"]] + \
        [p["deb"] for p in fetched["extract"] if p["name"] == "firmware-brcm80211"]
    target_file = os.path.join(REPO, "multistrap", NAME + ".toml")
    text = open(target_file).read()
    ours, armhf = tomllib.loads(text), tomllib.load(open(os.path.join(REPO, "multistrap", "debian-armhf.toml"), "rb"))
    for key in ("packages", "build_only"):
        assert ours[key] == armhf[key], "%s differs from debian-armhf's; the mirror has its .debs only" % key
    uboot_src = glob.glob(os.path.join(REPO, "build", "cache", "debian-armhf", "u-boot-src", "u-boot_*"))
    assert any(p.endswith(".dsc") for p in uboot_src), "no cached u-boot source; build debian-armhf first"

    key = Key(str(tmp / "gpg"))
    keyring = key.export(str(tmp / "test-archive.gpg"))
    t0 = time.monotonic()
    rpi_dtbs = {boards.BY_KEY[b].firmware_dtb: boards.BY_KEY[b].upstream_dtb
                for b in boards.BY_KEY if "armhf" in boards.BY_KEY[b].arches}
    standins = raspberrypi_standins(os.path.join(REPO, "build", "cache", "debian-armhf", "archives"),
                                    str(tmp / "standins"), rpi_dtbs)
    mirror = tmp / "mirror"
    raspbian = Archive(str(mirror / "raspbian"))
    raspbian.add("main", root, sources=uboot_src)
    raspbian.publish(key)
    rpi = Archive(str(mirror / "debian"))
    rpi.add("main", standins)
    rpi.publish(key)
    mirror_time = time.monotonic() - t0

    tdir = tmp / "targets"
    tdir.mkdir()
    patched = re.sub(r'(?m)^keyring = .*$', 'keyring = "%s"' % keyring, text)
    assert patched.count(keyring) == 2
    (tdir / (NAME + ".toml")).write_text(patched)
    url, stop = serve(str(mirror))
    env = dict(os.environ, MIGOS_TARGET_DIR=str(tdir))
    # no earlier download or state: every .deb comes from this run's mirror
    for d in (os.path.join(REPO, "build", NAME), os.path.join(REPO, "build", "cache", NAME), DIST):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "doit", "--db-file", str(tmp / "doit.db"), "build",
                               "target=" + NAME, "mirror=raspbian=%s/raspbian,raspberrypi=%s/debian" % (url, url)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    finally:
        stop()
    build_time = time.monotonic() - t0
    print("\nraspbian mirror: %.0f s to make, build %.0f s" % (mirror_time, build_time))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    return {"url": url, "stdout": proc.stdout}


@pytest.fixture(scope="module")
def manifest(built):
    with open(os.path.join(DIST, "manifest.json")) as f:
        return json.load(f)


def test_built_from_the_local_mirror_with_raspberry_pi_packages(built, manifest):
    assert manifest["target"] == NAME and manifest["architecture"] == "armhf"
    sources = open(os.path.join(REPO, "build", NAME, "apt", "sources.list")).read()
    assert "%s/raspbian bookworm main" % built["url"] in sources
    assert "%s/debian bookworm main" % built["url"] in sources
    k = json.load(open(os.path.join(REPO, "build", NAME, "kernel.json")))
    assert k["release"].endswith("-v7+") and k["vmlinuz"].endswith("/boot/kernel7.img")
    extract = json.load(open(os.path.join(REPO, "build", NAME, "fetch", "packages.json")))["extract"]
    assert sorted(p["name"] for p in extract) == ["firmware-brcm80211", "raspberrypi-bootloader",
                                                  "raspberrypi-kernel"]
    shipped = json.load(open(os.path.join(REPO, "build", NAME, "modules.json")))["firmware"]
    assert "brcm/brcmfmac43455-sdio.bin" in shipped and "brcm/brcmfmac43430-sdio.bin" in shipped
    boot = os.path.join(DIST, "boot")
    for f in ("bootcode.bin", "start.elf", "fixup.dat", "config.txt", "boot.scr", "migos.itb",
              "migos/u-boot.bin", "migos/bcm2709-rpi-2-b.dtb", "migos/bcm2710-rpi-3-b.dtb"):
        assert os.path.exists(os.path.join(boot, f)), f
    assert "arm_64bit=0" in open(os.path.join(boot, "config.txt")).read()
    # the FIT's Pi 2 device tree is the firmware-named one from the kernel package's /boot
    its = open(os.path.join(REPO, "build", NAME, "fit", "migos.its")).read()
    assert re.search(r'/incbin/\(".*/boot/bcm2709-rpi-2-b\.dtb"\)', its)


def test_boots_to_ready_on_virt(manifest, tmp_path):
    m = Machine(qemu_virt(kernel=os.path.join(DIST, "vmlinuz"), initrd=os.path.join(DIST, "initramfs.cpio.zst"),
                          append="console=ttyAMA0 rdinit=/init panic=10 migos.noop", arch="armhf"),
                str(tmp_path / "console.log"))
    try:
        m.expect(r"^MIGOS %s ready$" % re.escape(manifest["version"]), timeout=180)
        assert m.wait_exit(60) == 0
        assert not any("Kernel panic" in l for l in m.lines)
    finally:
        m.kill()
