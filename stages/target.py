"""Build targets: typed configuration, loaded from ``multistrap/NAME.toml`` and validated here only.

A target names the Debian architecture, the archives (with their keyrings: signature
checking cannot be turned off), the packages installed in the MIGOS root, the
packages only unpacked for their files (kernel, firmware), the U-Boot defconfig and
the boards whose device trees go into the FIT. Every error is one line that names the
file, the key and what to do.
"""

import dataclasses
import os
import re
import subprocess
import tomllib
from typing import Dict, List, Optional

from .tools import BuildError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where target files live; tests point MIGOS_TARGET_DIR at their own.
TARGET_DIR = os.environ.get("MIGOS_TARGET_DIR", os.path.join(REPO, "multistrap"))

QEMU_USER = {"arm64": "qemu-aarch64-static", "armhf": "qemu-arm-static", "armel": "qemu-arm-static"}
LAYOUTS = ("debian", "raspberrypi")
ISAS = ("armv6", "armhf", "arm64")
# U-Boot defconfigs for the Pi (Debian's u-boot 2023.01) -> the firmware kernel file they serve:
# BCM2835 (ARMv6) at kernel.img, BCM2836/7 in 32-bit mode at kernel7.img, BCM2711 in 32-bit
# mode at kernel7l.img (another peripheral base), 64-bit ones at kernel8.img.
UBOOT_DEFCONFIGS = {
    "rpi_defconfig": "kernel.img", "rpi_0_w_defconfig": "kernel.img",
    "rpi_2_defconfig": "kernel7.img", "rpi_3_32b_defconfig": "kernel7.img",
    "rpi_4_32b_defconfig": "kernel7l.img",
    "rpi_3_defconfig": "kernel8.img", "rpi_4_defconfig": "kernel8.img", "rpi_arm64_defconfig": "kernel8.img",
}
# the U-Boot file name on the boot partition when a target has one U-Boot (config.txt kernel=)
SINGLE_UBOOT = "u-boot.bin"


@dataclasses.dataclass(frozen=True)
class Archive:
    name: str
    url: str
    suite: str
    components: List[str]
    keyring: str                      # absolute, or relative to the repository (keys/…)

    def keyring_path(self):
        return self.keyring if os.path.isabs(self.keyring) else os.path.join(REPO, self.keyring)


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    arch: str
    description: str
    archives: List[Archive]
    packages: List[str]               # installed and configured in the MIGOS root
    build_only: List[str]             # needed to configure the root; their files are pruned
    extract: List[str]                # only unpacked for their files (kernel, firmware)
    kernel_flavour: str               # debian layout: "arm64" picks /boot/vmlinuz-*-arm64;
                                      # raspberrypi layout: "v7" picks /boot/kernel7.img + *-v7+ modules
    kernel_layout: str                # "debian" or "raspberrypi" (where the kernel package puts files)
    isa: str                          # instruction set the userland needs: armv6, armhf, arm64
    uboot_defconfig: Optional[str]   # one U-Boot for every board: migos/u-boot.bin, kernel=u-boot.bin
    uboot_defconfigs: Dict[str, str]  # or one per firmware kernel file: migos/kernel*.img, no kernel=
    uboot_cross: Optional[str]
    boards: List[str]                 # keys of migos.boards, in FIT configuration order
    qemu_virt: bool                   # also a FIT configuration for qemu's virt machine
    console: str                      # kernel console= arguments for the Pi
    modules: List[str]                # kernel modules to ship (dependencies are added)
    firmware: List[str]               # globs under lib/firmware of the extract set (wifi blobs)

    @property
    def qemu_user(self):
        return QEMU_USER[self.arch]

    @property
    def bits(self):
        return 64 if self.arch == "arm64" else 32

    def uboots(self):
        """{file name under migos/: U-Boot defconfig}, in a stable order."""
        if self.uboot_defconfig:
            return {SINGLE_UBOOT: self.uboot_defconfig}
        return dict(sorted(self.uboot_defconfigs.items()))

    def kernel_line(self):
        """config.txt's kernel= value: the single U-Boot, or None (the firmware picks kernel*.img)."""
        return SINGLE_UBOOT if self.uboot_defconfig else None

    def settings(self):
        """Everything that, when changed, must rebuild (doit config_changed)."""
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(Target)}
_ARCHIVE_FIELDS = {f.name for f in dataclasses.fields(Archive)}


def available():
    return sorted(f[:-5] for f in os.listdir(TARGET_DIR) if f.endswith(".toml"))


def parse_mirrors(text, archives, where):
    """``mirror=`` of ``doit build`` -> {archive name: URL}. Pure.

    ``URL`` replaces the first archive's URL; ``NAME=URL,NAME=URL`` replaces the named ones.
    """
    if not text:
        return {}
    names = [a.name for a in archives]
    items = [i.strip() for i in text.split(",") if i.strip()]
    if len(items) == 1 and not re.match(r"^[A-Za-z0-9_.-]+=", items[0]):
        return {names[0]: items[0]}
    out = {}
    for item in items:
        m = re.match(r"^([A-Za-z0-9_.-]+)=(.+)$", item)
        if not m:
            raise BuildError("mirror=%s: %r is not NAME=URL; use mirror=URL or mirror=NAME=URL,NAME=URL "
                             "with NAME one of %s" % (text, item, ", ".join(names)))
        if m.group(1) not in names:
            raise BuildError("mirror=%s: %s has no archive %r; its archives are %s" % (
                text, where, m.group(1), ", ".join(names)))
        out[m.group(1)] = m.group(2)
    return out


def load(name, mirror=None):
    """Load and validate target ``name``; ``mirror`` replaces archive URLs (see parse_mirrors)."""
    path = os.path.join(TARGET_DIR, name + ".toml")
    if not os.path.isfile(path):
        raise BuildError("unknown target %r; choose one of: %s" % (name, ", ".join(available())))
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise BuildError("%s: %s; fix the file" % (_show(path), e))
    return parse(raw, _show(path), mirror=mirror)


def _show(path):
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith("..") else rel


def parse(raw, where, mirror=None):
    unknown = set(raw) - _FIELDS - {"archive"}
    if unknown:
        raise BuildError("%s: unknown key %s; valid keys: %s" % (
            where, ", ".join(sorted(unknown)), ", ".join(sorted(_FIELDS | {"archive"}))))
    archives = []
    for i, a in enumerate(raw.get("archive", [])):
        bad = set(a) - _ARCHIVE_FIELDS
        if bad:
            raise BuildError("%s: [[archive]] #%d has unknown key %s; valid keys: %s" % (
                where, i + 1, ", ".join(sorted(bad)), ", ".join(sorted(_ARCHIVE_FIELDS))))
        missing = _ARCHIVE_FIELDS - set(a)
        if missing:
            raise BuildError("%s: [[archive]] #%d lacks %s" % (where, i + 1, ", ".join(sorted(missing))))
        archives.append(Archive(**a))
    if not archives:
        raise BuildError("%s: no [[archive]] given; a target needs at least one archive" % where)
    urls = parse_mirrors(mirror, archives, where)
    archives = [dataclasses.replace(a, url=urls.get(a.name, a.url)) for a in archives]
    if len({a.name for a in archives}) != len(archives):
        raise BuildError("%s: two [[archive]] entries have the same name; names must differ" % where)
    values = dict(raw, archives=archives)
    values.pop("archive", None)
    values.setdefault("uboot_defconfig", None)
    values.setdefault("uboot_defconfigs", {})
    values.setdefault("uboot_cross", None)
    values.setdefault("kernel_layout", "debian")
    values.setdefault("isa", raw.get("arch"))
    values.setdefault("firmware", [])
    missing = _FIELDS - set(values)
    if missing:
        raise BuildError("%s: missing key %s" % (where, ", ".join(sorted(missing))))
    target = Target(**values)
    if target.arch not in QEMU_USER:
        raise BuildError("%s: arch %r is not supported; use one of %s" % (
            where, target.arch, ", ".join(sorted(QEMU_USER))))
    if target.kernel_layout not in LAYOUTS:
        raise BuildError("%s: kernel_layout %r is not one of %s" % (where, target.kernel_layout, ", ".join(LAYOUTS)))
    if target.isa not in ISAS:
        raise BuildError("%s: isa %r is not one of %s" % (where, target.isa, ", ".join(ISAS)))
    for a in target.archives:
        if not os.path.isfile(a.keyring_path()):
            raise BuildError("%s: keyring %s of archive %s not found; install debian-archive-keyring "
                             "or put the archive's key under keys/" % (where, a.keyring, a.name))
        if not a.url.startswith(("http://", "https://", "file:/")):
            raise BuildError("%s: archive %s URL %r is not http(s):// or file:/" % (where, a.name, a.url))
    from migos import boards
    for b in target.boards:
        if b not in boards.BY_KEY:
            raise BuildError("%s: unknown board %r; known boards: %s" % (
                where, b, ", ".join(sorted(boards.BY_KEY))))
        if target.kernel_layout == "debian" and not boards.BY_KEY[b].upstream_dtb:
            raise BuildError("%s: board %s has no device tree in Debian's kernel; remove it from boards"
                             % (where, b))
        if target.isa not in boards.BY_KEY[b].arches:
            raise BuildError("%s: board %s cannot run %s; remove it from boards" % (where, b, target.isa))
    if not target.boards and not target.qemu_virt:
        raise BuildError("%s: no boards and qemu_virt = false; the FIT needs a configuration" % where)
    check_uboots(target, where)
    return target


def check_uboots(target, where):
    """uboot_defconfig xor uboot_defconfigs; every defconfig known and at its kernel file; every
    board's kernel file served by a U-Boot (a spare one is harmless: no board loads it)."""
    from migos import boards
    if target.uboot_defconfig and target.uboot_defconfigs:
        raise BuildError("%s: both uboot_defconfig and uboot_defconfigs are set; keep one" % where)
    if not target.uboot_defconfig and not target.uboot_defconfigs:
        raise BuildError("%s: no uboot_defconfig or uboot_defconfigs; name the U-Boot defconfig(s)" % where)
    if not isinstance(target.uboot_defconfigs, dict):
        raise BuildError('%s: uboot_defconfigs must be a table like {"kernel7.img" = "rpi_2_defconfig"}' % where)
    pairs = [(None, target.uboot_defconfig)] if target.uboot_defconfig else sorted(target.uboot_defconfigs.items())
    for kfile, defconfig in pairs:
        if kfile is not None and kfile not in boards.KERNEL_FILES:
            raise BuildError("%s: uboot_defconfigs names %r, which is not a firmware kernel file; use %s" % (
                where, kfile, ", ".join(boards.KERNEL_FILES)))
        if defconfig not in UBOOT_DEFCONFIGS:
            raise BuildError("%s: U-Boot defconfig %r is not a Raspberry Pi defconfig MIGOS knows; use one of %s" % (
                where, defconfig, ", ".join(sorted(UBOOT_DEFCONFIGS))))
        if kfile is not None and UBOOT_DEFCONFIGS[defconfig] != kfile:
            raise BuildError("%s: uboot_defconfigs maps %s to %s, which is a U-Boot for %s" % (
                where, kfile, defconfig, UBOOT_DEFCONFIGS[defconfig]))
    need = boards.group_by_kernel(target.boards, target.bits)
    if target.uboot_defconfig:
        serves = UBOOT_DEFCONFIGS[target.uboot_defconfig]
        for kfile, keys in need.items():
            if kfile != serves:
                raise BuildError("%s: boards %s boot %s, but uboot_defconfig %s is a U-Boot for %s; map each "
                                 "kernel file to its U-Boot with uboot_defconfigs" % (
                                     where, ", ".join(keys), kfile, target.uboot_defconfig, serves))
    else:
        for kfile, keys in need.items():
            if kfile not in target.uboot_defconfigs:
                raise BuildError("%s: boards %s boot %s but uboot_defconfigs has no U-Boot for it" % (
                    where, ", ".join(keys), kfile))


@dataclasses.dataclass(frozen=True)
class Context:
    """A target plus where its files go. One per ``doit`` run."""
    target: Target
    build: str            # build/NAME: every intermediate file
    cache: str            # build/cache/NAME: downloaded .debs and sources (kept by doit clean)
    dist: str             # dist/NAME: the published artefacts
    source_date_epoch: int
    version: str

    def path(self, *parts):
        return os.path.join(self.build, *parts)


def source_date_epoch():
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        return int(env)
    try:
        out = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%ct"], capture_output=True,
                             text=True, check=True).stdout.strip()
        return int(out)
    except (subprocess.CalledProcessError, ValueError, FileNotFoundError):
        return 0


def migos_version():
    import sys
    sys.path.insert(0, os.path.join(REPO, "packages", "migos"))
    from migos import __version__
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=8", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        return "%s+g%s" % (__version__, rev)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return __version__


def context(name, mirror=None, root=REPO):
    target = load(name, mirror=mirror)
    return Context(target=target, build=os.path.join(root, "build", name),
                   cache=os.path.join(root, "build", "cache", name),
                   dist=os.path.join(root, "dist", name),
                   source_date_epoch=source_date_epoch(), version=migos_version())
