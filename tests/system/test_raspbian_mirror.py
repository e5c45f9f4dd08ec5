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

STAND-INS, the one place in the test suite: Raspberry Pi's kernel and bootloader packages
cannot be downloaded here, so the two packages are built with ``dpkg-deb -b`` from Debian
packages (downloaded once from Debian's archive, signatures checked, cached under
build/cache/standins/), one Debian kernel per Raspberry Pi kernel file:

    /boot/kernel.img    Debian armel ``linux-image-rpi`` (ARMv6, BCM2835: Pi 1 / Zero)   modules RELEASE+
    /boot/kernel7.img   Debian armhf ``linux-image-armmp`` (ARMv7: Pi 2 / 3)           modules RELEASE-v7+
    /boot/kernel7l.img  Debian armhf ``linux-image-armmp-lpae`` (ARMv7 + LPAE: Pi 4)   modules RELEASE-v7l+

plus armmp's upstream dtbs under the firmware's names (bcm2708-rpi-zero.dtb, bcm2709-rpi-2-b.dtb,
…) in /boot and Debian's raspi-firmware blobs in /boot — the paths the real packages use, so
the build's ``raspberrypi`` kernel layout, its three kernels and three U-Boots are exercised.
What this cannot prove: that real Raspberry Pi kernels boot (they would not boot on qemu
``virt`` at all); module loading in the booted image (the stand-in module directories are
named RELEASE-v7+ etc. while the Debian kernels call themselves RELEASE, so modprobe finds
nothing; /init tolerates that); and an ARMv6 userland: the root here is Debian's armhf (ARMv7)
set, so the ``-M raspi0`` test stops at U-Boot's "Starting kernel" and the v6 kernel's first
lines, never at MIGOS's ready line on an ARMv6 core.

Everything else (busybox, python3, the /init, the FIT, U-Boot) is what a real Raspbian
build produces from the same package names. Built once per test run (module fixture).
"""

import glob
import gzip
import hashlib
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
from tests.apt_mirror import STANDIN_KERNELS, Archive, Key, raspberrypi_standins, serve, standin_kernel_debs

from .qemu import REPO, Machine, dist_dir, make_boot_disk, qemu_virt

pytestmark = pytest.mark.system
NAME = "raspbian-armhf"
DIST = dist_dir(NAME)
ARMHF = os.path.join(REPO, "build", "debian-armhf")
STANDINS = os.path.join(REPO, "build", "cache", "standins")
BUILD = os.path.join(REPO, "build", NAME)
# every board with a 32-bit kernel file: the target's boards
BOARDS32 = [b for b in boards.BOARDS if b.kernel32]


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
    rpi_dtbs = {b.firmware_dtb: b.upstream_dtb for b in BOARDS32}
    kernel_debs = standin_kernel_debs(STANDINS)          # Debian's archive, once; then the cache
    (firmware,) = [p["deb"] for p in fetched["extract"] if p["name"] == "raspi-firmware"]
    standins = raspberrypi_standins(kernel_debs, firmware, os.path.join(STANDINS, "debs"), rpi_dtbs)
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
    return {"url": url, "stdout": proc.stdout, "kernel_debs": kernel_debs}


@pytest.fixture(scope="module")
def manifest(built):
    with open(os.path.join(DIST, "manifest.json")) as f:
        return json.load(f)


def test_built_from_the_local_mirror_with_raspberry_pi_packages(built, manifest):
    assert manifest["target"] == NAME and manifest["architecture"] == "armhf"
    sources = open(os.path.join(BUILD, "apt", "sources.list")).read()
    assert "%s/raspbian bookworm main" % built["url"] in sources
    assert "%s/debian bookworm main" % built["url"] in sources
    extract = json.load(open(os.path.join(BUILD, "fetch", "packages.json")))["extract"]
    assert sorted(p["name"] for p in extract) == ["firmware-brcm80211", "raspberrypi-bootloader",
                                                  "raspberrypi-kernel"]
    # the stand-ins say what they are
    (kpkg,) = [p for p in extract if p["name"] == "raspberrypi-kernel"]
    assert kpkg["version"].endswith("+migostest")
    shipped = json.load(open(os.path.join(BUILD, "modules.json")))["firmware"]
    assert "brcm/brcmfmac43455-sdio.bin" in shipped and "brcm/brcmfmac43430-sdio.bin" in shipped
    boot = os.path.join(DIST, "boot")
    for f in ["bootcode.bin", "start.elf", "fixup.dat", "config.txt", "boot.scr", "migos.itb"] + \
            ["migos/" + b.firmware_dtb for b in BOARDS32]:
        assert os.path.exists(os.path.join(boot, f)), f
    # the FIT's Pi 2 device tree is the firmware-named one from the kernel package's /boot
    its = open(os.path.join(BUILD, "fit", "migos.its")).read()
    assert re.search(r'/incbin/\(".*/boot/bcm2709-rpi-2-b\.dtb"\)', its)


def test_three_kernels_one_module_set_each(built):
    k = json.load(open(os.path.join(BUILD, "kernel.json")))
    assert sorted(k["kernels"]) == ["v6", "v7", "v7l"] and k["needed"] == ["v7", "v6", "v7l"]
    assert k["release"].endswith("-v7+") and k["vmlinuz"].endswith("/boot/kernel7.img")    # the primary
    for flavour, (_, _, image, suffix) in STANDIN_KERNELS.items():
        entry = k["kernels"][flavour]
        assert entry["file"] == image and entry["image"].endswith("/boot/" + image)
        assert entry["release"].endswith(suffix)
    assert re.match(r"^\d+\.\d+\.\d+\+$", k["kernels"]["v6"]["release"])
    mods = json.load(open(os.path.join(BUILD, "modules.json")))
    assert sorted(mods["modules"]) == sorted(e["release"] for e in k["kernels"].values())
    for release, paths in mods["modules"].items():
        assert any(p.endswith("/bcm2835_wdt.ko") or p.endswith("/brcmfmac.ko") for p in paths), release
    listing = subprocess.run(["sh", "-c", "zstd -dc %s | cpio -t 2>/dev/null" % os.path.join(
        DIST, "initramfs.cpio.zst")], capture_output=True, text=True, check=True).stdout.split()
    for release in mods["modules"]:
        assert "usr/lib/modules/%s/modules.dep" % release in listing


def test_three_u_boots_under_the_firmware_names(built):
    boot = os.path.join(DIST, "boot")
    config = open(os.path.join(boot, "config.txt")).read()
    assert "os_prefix=migos/" in config and "arm_64bit=0" in config
    assert not re.search(r"(?m)^\s*kernel=", config) and not re.search(r"(?m)^\s*\[(?!all\])", config)
    assert not os.path.exists(os.path.join(boot, "migos", "u-boot.bin"))
    sums = {}
    source = open(os.path.join(BUILD, "uboot", "source.txt")).read().split("\n")[1:]
    recorded = {l.split()[0]: (l.split()[1], l.split()[2]) for l in source if l.strip()}
    assert {f: d for f, (d, _) in recorded.items()} == {
        "kernel.img": "rpi_defconfig", "kernel7.img": "rpi_2_defconfig", "kernel7l.img": "rpi_4_32b_defconfig"}
    for name, (defconfig, key) in recorded.items():
        data = open(os.path.join(boot, "migos", name), "rb").read()
        assert data == open(os.path.join(REPO, "build", "cache", "u-boot-builds", key, "u-boot.bin"), "rb").read()
        assert b"U-Boot 2023.01" in data
        sums[name] = hashlib.sha256(data).hexdigest()
    assert len(set(sums.values())) == 3, "three distinct U-Boot binaries"


def _fdtget(itb, node, prop, kind="s"):
    return subprocess.run(["fdtget", "-t", kind, itb, node, prop], capture_output=True, text=True,
                          check=True).stdout.strip()


def _fit_hash(itb, node):
    return "".join("%02x" % int(x, 16) for x in _fdtget(itb, node + "/hash-1", "value", "bx").split())


def test_fit_configurations_point_at_the_right_kernel_and_fdt(built):
    itb = os.path.join(DIST, "boot", "migos.itb")
    k = json.load(open(os.path.join(BUILD, "kernel.json")))
    kernels = {}
    for flavour in ("v6", "v7", "v7l"):
        node = "/images/kernel-rpi-" + flavour
        assert k["kernels"][flavour]["release"] in _fdtget(itb, node, "description")
        gz = os.path.join(BUILD, "fit", "kernel-%s.gz" % flavour)
        assert _fit_hash(itb, node) == hashlib.sha256(open(gz, "rb").read()).hexdigest()
        assert gzip.open(gz).read() == open(k["kernels"][flavour]["image"], "rb").read()
        assert _fdtget(itb, node, "load", "x") == "8000"
        kernels[flavour] = node
    flavour_of = {"kernel.img": "v6", "kernel7.img": "v7", "kernel7l.img": "v7l"}
    for b in BOARDS32:
        conf = "/configurations/" + b.fit_config
        assert _fdtget(itb, conf, "kernel") == "kernel-rpi-" + flavour_of[b.kernel32], b.key
        assert _fdtget(itb, conf, "fdt") == "fdt-" + b.fit_config
        assert _fdtget(itb, conf, "ramdisk") == "ramdisk"
        dtb = os.path.join(DIST, "boot", "migos", b.firmware_dtb)
        assert _fit_hash(itb, "/images/fdt-" + b.fit_config) == hashlib.sha256(open(dtb, "rb").read()).hexdigest()
    assert _fdtget(itb, "/configurations/qemu-virt", "kernel") == "kernel-virt"
    assert _fdtget(itb, "/images/kernel-virt/hash-1", "value", "bx") == \
        _fdtget(itb, kernels["v7"] + "/hash-1", "value", "bx")


def test_armv6_u_boot_starts_the_v6_kernel_on_raspi0(manifest, tmp_path):
    """The Pi Zero chain as far as it can go here: qemu ``-M raspi0`` (BCM2835, ARM1176, one core)
    runs migos/kernel.img (U-Boot rpi_defconfig) where the firmware puts it (0x8000; qemu's own
    raspi boot would load it at 0x10000, so the generic loader places it and sets the PC);
    U-Boot identifies the Zero, runs boot.scr from the SD card, checks every FIT hash, picks
    rpi-zero from its ${fdtfile} and starts the v6 kernel (Debian's rpi flavour, the stand-in),
    which runs on the ARM1176: its banner, the Pi Zero device tree, the initramfs unpacked.
    No firmware runs, so U-Boot has no firmware device tree (it uses its built-in one) and
    bootm takes the FIT's own fdt-rpi-zero (boot.scr has it copied to an aligned address).
    The kernel then dies in bcm2835_power_probe (qemu's raspi0 does not emulate the power
    domain block: an external abort), before userspace. Not proven: MIGOS's ready line on
    ARMv6 (and the stand-in userland is ARMv7 anyway), the real firmware's choice of kernel.img."""
    sd = str(tmp_path / "sd.img")
    make_boot_disk(sd, os.path.join(DIST, "boot"), size_mib=128, extra_files={
        "migos/cmdline.env": b"migos_extra=console=ttyAMA0,115200 earlycon=pl011,0x20201000\n"})
    argv = ["qemu-system-arm", "-M", "raspi0", "-m", "512", "-nographic", "-no-reboot", "-monitor", "none",
            "-serial", "stdio", "-device", "loader,file=%s,addr=0x8000,cpu-num=0" % os.path.join(
                DIST, "boot", "migos", "kernel.img"),
            "-drive", "if=sd,format=raw,file=%s" % sd]
    m = Machine(argv, str(tmp_path / "console.log"))
    try:
        m.expect(r"^RPI Zero \(0x", timeout=60)
        m.expect(r"MIGOS: boot.scr " + re.escape(manifest["version"]), timeout=120)
        m.expect(r"migos.itb verified, booting configuration rpi-zero$", timeout=300)
        m.expect(r"Using 'rpi-zero' configuration", timeout=60)
        m.expect(r"Trying 'kernel-rpi-v6' kernel subimage", timeout=60)
        m.expect(r"Trying 'fdt-rpi-zero' fdt subimage", timeout=120)
        m.expect(r"Starting kernel", timeout=120)
        m.expect(r"Linux version \S+-rpi ", timeout=60)
        m.expect(r"CPU: ARMv6-compatible processor", timeout=30)
        m.expect(r"OF: fdt: Machine model: Raspberry Pi Zero", timeout=30)
        m.expect(r"Freeing initrd memory", timeout=120)
    finally:
        m.kill()


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
