"""Build targets: typed configuration, loaded from ``multistrap/NAME.toml`` and validated here only.

A target names the Debian architecture, the archives (with their keyrings: signature
checking cannot be turned off), the packages installed in the MIGOS root, the
packages only unpacked for their files (kernel, firmware), the U-Boot defconfig and
the boards whose device trees go into the FIT. Every error is one line that names the
file, the key and what to do.
"""

import dataclasses
import os
import subprocess
import tomllib
from typing import List, Optional

from .tools import BuildError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where target files live; tests point MIGOS_TARGET_DIR at their own.
TARGET_DIR = os.environ.get("MIGOS_TARGET_DIR", os.path.join(REPO, "multistrap"))

QEMU_USER = {"arm64": "qemu-aarch64-static", "armhf": "qemu-arm-static", "armel": "qemu-arm-static"}


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
    kernel_flavour: str               # e.g. "arm64": picks /boot/vmlinuz-*-arm64
    uboot_defconfig: Optional[str]
    uboot_cross: Optional[str]
    boards: List[str]                 # keys of migos.boards, in FIT configuration order
    qemu_virt: bool                   # also a FIT configuration for qemu's virt machine
    console: str                      # kernel console= arguments for the Pi
    modules: List[str]                # kernel modules to ship (dependencies are added)

    @property
    def qemu_user(self):
        return QEMU_USER[self.arch]

    def settings(self):
        """Everything that, when changed, must rebuild (doit config_changed)."""
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(Target)}
_ARCHIVE_FIELDS = {f.name for f in dataclasses.fields(Archive)}


def available():
    return sorted(f[:-5] for f in os.listdir(TARGET_DIR) if f.endswith(".toml"))


def load(name, mirror=None):
    """Load and validate target ``name``; ``mirror`` replaces the first archive's URL."""
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
    if mirror:
        archives[0] = dataclasses.replace(archives[0], url=mirror)
    values = dict(raw, archives=archives)
    values.pop("archive", None)
    values.setdefault("uboot_defconfig", None)
    values.setdefault("uboot_cross", None)
    missing = _FIELDS - set(values)
    if missing:
        raise BuildError("%s: missing key %s" % (where, ", ".join(sorted(missing))))
    target = Target(**values)
    if target.arch not in QEMU_USER:
        raise BuildError("%s: arch %r is not supported; use one of %s" % (
            where, target.arch, ", ".join(sorted(QEMU_USER))))
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
        if not boards.BY_KEY[b].upstream_dtb:
            raise BuildError("%s: board %s has no device tree in Debian's kernel; remove it from boards"
                             % (where, b))
        if target.arch not in boards.BY_KEY[b].arches:
            raise BuildError("%s: board %s cannot run %s; remove it from boards" % (where, b, target.arch))
    if not target.boards and not target.qemu_virt:
        raise BuildError("%s: no boards and qemu_virt = false; the FIT needs a configuration" % where)
    return target


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
