"""The MIGOS boot tarball (``migos-boot-NAME.tar.gz``): checked against SHA256SUMS, read
safely, and checked for the shape ``migos init`` relies on."""

import hashlib
import io
import os
import re
import tarfile

from ..errors import UsageError

# Files the firmware needs on a fresh card only; init never replaces the old OS's.
FIRMWARE_ONLY = re.compile(r"^(bootcode\.bin|start[^/]*\.elf|fixup[^/]*\.dat|cmdline\.txt|config\.txt)$")
REQUIRED = ("boot.scr", "migos.itb", "config.txt", "migos/cmdline.txt")
# 32-bit builds carry one U-Boot per firmware kernel file (the firmware picks the file itself)
FIRMWARE_KERNELS = ("kernel.img", "kernel7.img", "kernel7l.img", "kernel8.img")


def config_kernel(cfg):
    """The ``kernel=`` value of a MIGOS config.txt (one without filters), or None. Pure."""
    value = None
    for line in cfg.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("kernel="):
            value = line[len("kernel="):].strip()
    return value


def boot_loaders(files, cfg):
    """The U-Boot files under migos/ the firmware will load: ``kernel=NAME`` names one;
    without it the firmware picks migos/kernel*.img by board. [] when they are missing. Pure."""
    name = config_kernel(cfg)
    if name:
        return ["migos/" + name] if "migos/" + name in files else []
    return ["migos/" + k for k in FIRMWARE_KERNELS if "migos/" + k in files]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_sha256sums(text):
    sums = {}
    for line in text.splitlines():
        m = re.match(r"^([0-9a-fA-F]{64}) [ *](.+)$", line.strip())
        if m:
            sums[os.path.basename(m.group(2).strip())] = m.group(1).lower()
    return sums


def verify(path, sums_path=None):
    """Check ``path`` against SHA256SUMS next to it (or ``sums_path``)."""
    sums_path = sums_path or os.path.join(os.path.dirname(os.path.abspath(path)), "SHA256SUMS")
    try:
        with open(sums_path) as f:
            sums = parse_sha256sums(f.read())
    except OSError:
        raise UsageError("no SHA256SUMS next to %s" % path,
                         "download SHA256SUMS of the same release next to the tarball")
    name = os.path.basename(path)
    if name not in sums:
        raise UsageError("SHA256SUMS does not list %s" % name,
                         "use the SHA256SUMS published with this tarball")
    actual = sha256_file(path)
    if actual != sums[name]:
        raise UsageError("%s does not match its SHA256SUMS (corrupt or tampered download)" % name,
                         "download it again")
    return actual


class BootTarball:
    """The regular files of a verified boot tarball, in memory: {relative path: bytes}."""

    def __init__(self, files, name):
        self.files = files
        self.name = name

    @property
    def migos_config(self):
        data = self.files["config.txt"]
        return data.decode("utf-8", "replace")

    def install_files(self):
        """Files init puts on the old boot partition (not firmware, config.txt, cmdline.txt)."""
        return {p: d for p, d in sorted(self.files.items()) if not FIRMWARE_ONLY.match(p)}

    def size(self):
        return sum(len(d) for d in self.install_files().values())


def load(path, check_sums=True):
    if not os.path.isfile(path):
        raise UsageError("MIGOS boot tarball %s does not exist" % path,
                         "pass the path of migos-boot-NAME.tar.gz with --migos-tarball")
    if check_sums:
        verify(path)
    files = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar.getmembers():
                name = m.name
                while name.startswith("./"):
                    name = name[2:]
                if name in ("", "."):
                    continue
                if name.startswith("/") or ".." in name.split("/"):
                    raise UsageError("%s holds an unsafe path %r" % (path, m.name),
                                     "use a tarball from a MIGOS build")
                if m.isdir():
                    continue
                if not m.isfile():
                    raise UsageError("%s holds %r, which is not a regular file" % (path, m.name),
                                     "use a tarball from a MIGOS build")
                files[name] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UsageError("%s is not a readable tar archive (%s)" % (path, e),
                         "download it again")
    # the build's tarball holds the tree under boot/ (DESIGN.md 1); a flat one is accepted too
    if files and all(n.startswith("boot/") for n in files):
        files = {n[len("boot/"):]: d for n, d in files.items()}
    missing = [r for r in REQUIRED if r not in files]
    if missing:
        raise UsageError("%s lacks %s" % (path, ", ".join(missing)),
                         "use a tarball from a MIGOS build")
    cfg_bytes = files["config.txt"]
    cfg = cfg_bytes.decode("utf-8", "replace")
    if not re.search(r"^\s*os_prefix=migos/\s*$", cfg, re.M):
        raise UsageError("%s: config.txt does not set os_prefix=migos/" % path,
                         "use a tarball from a MIGOS build")
    if not boot_loaders(files, cfg):
        name = config_kernel(cfg)
        raise UsageError("%s lacks %s" % (path, "migos/" + name if name else
                                          "a U-Boot as migos/kernel*.img (its config.txt has no kernel=)"),
                         "use a tarball from a MIGOS build")
    return BootTarball(files, os.path.basename(path))


def make_fake(out_dir, name="test", itb=b"FIT-IMAGE", extra=None):
    """A tarball of the real shape (the tree under boot/) with placeholder contents, plus
    SHA256SUMS (tests, dry runs)."""
    os.makedirs(out_dir, exist_ok=True)
    files = {
        "bootcode.bin": b"bootcode", "start.elf": b"start", "start4.elf": b"start4",
        "fixup.dat": b"fixup", "fixup4.dat": b"fixup4",
        "config.txt": b"# MIGOS\nos_prefix=migos/\nkernel=u-boot.bin\narm_64bit=1\nenable_uart=1\n",
        "cmdline.txt": b"console=serial0,115200 migos\n",
        "boot.scr": b"'V\x05\x19\x56boot script placeholder",
        "migos.itb": itb,
        "migos/u-boot.bin": b"u-boot",
        "migos/cmdline.txt": b"console=serial0,115200\n",
        "migos/bcm2710-rpi-3-b.dtb": b"dtb3", "migos/bcm2711-rpi-4-b.dtb": b"dtb4",
    }
    files.update(extra or {})
    path = os.path.join(out_dir, "migos-boot-%s.tar.gz" % name)
    with tarfile.open(path, "w:gz") as tar:
        for rel in sorted(files):
            info = tarfile.TarInfo("boot/" + rel)
            info.size = len(files[rel])
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[rel]))
    with open(os.path.join(out_dir, "SHA256SUMS"), "w") as f:
        f.write("%s  %s\n" % (sha256_file(path), os.path.basename(path)))
    return path
