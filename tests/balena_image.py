"""Synthetic balenaOS images and old-OS (Raspbian-like) disk images, for tests and benchmarks.

No root needed: file systems are made in temporary files (mkfs.vfat, mkfs.ext4 -d, mtools) and
copied into the image at their offsets; partition tables are written by sfdisk.

    info = make_balena_image(path, "raspberrypi3", boot_files={"extra.txt": b"..."})
    disk = make_old_os_disk(path, size_mib=256, p1_start_mib=4, p1_size_mib=64,
                            p1_files={"config.json": b"{...}"})

Both return a dict with the partition geometry (bytes).  Images are deterministic for a given
``seed`` apart from file-system UUIDs and times.
"""

import json
import os
import random
import shutil
import subprocess
import tempfile

MIB = 1 << 20
SECTOR = 512


def _run(argv, **kw):
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", SOURCE_DATE_EPOCH="1600000000")
    subprocess.run([str(a) for a in argv], check=True, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, env=env, **kw)


def _sfdisk(path, lines):
    script = "label: dos\nunit: sectors\nlabel-id: 0x1234abcd\n\n" + "\n".join(lines) + "\n"
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(path)],
                   input=script.encode(), check=True, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE)


def _copy_into(dst, offset, src):
    with open(src, "rb") as s, open(dst, "r+b") as d:
        d.seek(offset)
        shutil.copyfileobj(s, d, 4 * MIB)


def content(rng, size, random_fraction=0.5):
    """``size`` bytes: part random, part compressible text (so compressors have work to do)."""
    nrand = int(size * random_fraction)
    text = (b"balenaOS synthetic content %08d\n" % rng.randrange(10 ** 8)) * (
        (size - nrand) // 35 + 1)
    return rng.getrandbits(8 * nrand).to_bytes(nrand, "little") + text[:size - nrand] \
        if nrand else text[:size]


def make_fat(path, size_mib, label, files, fat_bits=None):
    """A FAT file system image at ``path`` holding ``files`` ({'dir/name': bytes})."""
    if os.path.exists(path):
        os.unlink(path)
    argv = ["mkfs.vfat", "-n", label, "-i", "1234abcd"]
    if fat_bits:
        argv += ["-F", str(fat_bits)]
    _run(argv + ["-C", path, str(size_mib * 1024)])
    tmp = tempfile.mkdtemp(prefix="fat-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        made = set()
        for i, (name, data) in enumerate(files.items()):
            parts = name.split("/")
            for j in range(1, len(parts)):
                d = "/".join(parts[:j])
                if d not in made:
                    _run(["mmd", "-i", path, "::" + d])
                    made.add(d)
            local = os.path.join(tmp, "f%d" % i)
            with open(local, "wb") as f:
                f.write(data)
            _run(["mcopy", "-o", "-i", path, local, "::" + name])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_ext4(path, size_mib, label, rng, fill_mib, random_fraction=0.5):
    tmp = tempfile.mkdtemp(prefix="ext4-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        left = int(fill_mib * MIB)
        i = 0
        while left > 0:
            n = min(left, 2 * MIB)
            with open(os.path.join(tmp, "file%03d.bin" % i), "wb") as f:
                f.write(content(rng, n, random_fraction))
            left -= n
            i += 1
        with open(os.path.join(tmp, "LABEL"), "w") as f:
            f.write(label + "\n")
        if os.path.exists(path):
            os.unlink(path)
        _run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0",
              "-U", "12345678-1234-1234-1234-%012d" % rng.randrange(10 ** 12),
              "-d", tmp, path, "%dM" % size_mib])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_balena_image(path, device_type="raspberrypi3", size_mib=None, boot_files=None,
                      boot_mib=16, root_mib=24, state_mib=8, data_mib=12, align_mib=4,
                      fill=0.5, random_fraction=0.5, seed=1, labels=None, dt_slug=None,
                      kernel_mib=2):
    """Write a balenaOS-shaped disk image to ``path``; return its geometry.

    Layout (like balenaOS): p1 resin-boot FAT at ``align_mib``, p2 resin-rootA, p3 resin-rootB,
    p4 extended, p5 resin-state, p6 resin-data, each logical partition ``align_mib`` after its
    EBR.  ``size_mib`` pads the image (default: ends with p6).  ``labels`` overrides file
    system labels ({"boot": ..., "rootA": ...}); ``dt_slug`` the slug in device-type.json.
    """
    rng = random.Random(seed)
    labels = dict({"boot": "resin-boot", "rootA": "resin-rootA", "rootB": "resin-rootB",
                   "state": "resin-state", "data": "resin-data"}, **(labels or {}))
    a = align_mib * MIB
    p1 = (a, boot_mib * MIB)
    p2 = (p1[0] + p1[1], root_mib * MIB)
    p3 = (p2[0] + p2[1], root_mib * MIB)
    ext_start = p3[0] + p3[1]
    p5 = (ext_start + a, state_mib * MIB)
    p6 = (p5[0] + p5[1] + a, data_mib * MIB)
    ext = (ext_start, p6[0] + p6[1] - ext_start)
    end = p6[0] + p6[1]
    total = max(end, (size_mib or 0) * MIB)
    with open(path, "wb") as f:
        f.truncate(total)
    s = lambda x: x // SECTOR
    _sfdisk(path, [
        "start=%d, size=%d, type=c, bootable" % (s(p1[0]), s(p1[1])),
        "start=%d, size=%d, type=83" % (s(p2[0]), s(p2[1])),
        "start=%d, size=%d, type=83" % (s(p3[0]), s(p3[1])),
        "start=%d, size=%d, type=5" % (s(ext[0]), s(ext[1])),
        "start=%d, size=%d, type=83" % (s(p5[0]), s(p5[1])),
        "start=%d, size=%d, type=83" % (s(p6[0]), s(p6[1])),
    ])
    work = tempfile.mkdtemp(prefix="balena-img-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        files = {
            "config.txt": b"# synthetic balenaOS config.txt\nkernel=kernel8.img\n",
            "cmdline.txt": b"console=serial0,115200 root=LABEL=resin-rootA rootwait\n",
            "kernel8.img": content(rng, int(kernel_mib * MIB), random_fraction),
            "overlays/dummy.dtbo": content(rng, 64 * 1024, random_fraction),
            "config.json": json.dumps({"deviceType": device_type, "persistentLogging": False},
                                      indent=2).encode() + b"\n",
            "os-release": b'NAME="balenaOS"\nVERSION="2.50.1+rev1"\n',
            "device-type.json": json.dumps({"slug": dt_slug or device_type,
                                            "name": "Synthetic " + device_type,
                                            "arch": "aarch64"}, indent=2).encode() + b"\n",
        }
        files.update(boot_files or {})
        boot = os.path.join(work, "boot.img")
        make_fat(boot, boot_mib, labels["boot"], files)
        _copy_into(path, p1[0], boot)
        os.unlink(boot)
        for (off, size), key in ((p2, "rootA"), (p3, "rootB"), (p5, "state"), (p6, "data")):
            img = os.path.join(work, key + ".img")
            fill_mib = max(0.25, (size // MIB) * fill * (0.5 if key in ("state", "data") else 1))
            make_ext4(img, size // MIB, labels[key], rng, fill_mib, random_fraction)
            _copy_into(path, off, img)
            os.unlink(img)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"path": path, "boot": p1, "rootA": p2, "rootB": p3, "extended": ext,
            "state": p5, "data": p6, "end": end, "size": total, "files": files,
            "device_type": device_type}


def make_old_os_disk(path, size_mib, p1_start_mib=4, p1_size_mib=64, p1_files=None, seed=2,
                     p2_pattern_mib=4, base_files=True):
    """A Raspbian-like disk image: MBR, p1 FAT boot (with ``p1_files``), p2 Linux to the end.

    p2 gets a recognisable pattern in its first ``p2_pattern_mib`` MiB (no real root fs).
    Without ``base_files`` p1 holds exactly ``p1_files`` (no stand-in MIGOS files).
    """
    rng = random.Random(seed)
    p1 = (p1_start_mib * MIB, p1_size_mib * MIB)
    p2 = (p1[0] + p1[1], size_mib * MIB - (p1[0] + p1[1]))
    with open(path, "wb") as f:
        f.truncate(size_mib * MIB)
    _sfdisk(path, ["start=%d, size=%d, type=c, bootable" % (p1[0] // SECTOR, p1[1] // SECTOR),
                   "start=%d, size=%d, type=83" % (p2[0] // SECTOR, p2[1] // SECTOR)])
    files = {
        "bootcode.bin": content(rng, 50 * 1024, 1.0),
        "start4.elf": content(rng, 256 * 1024, 1.0),
        "config.txt": b"# MIGOS\nkernel=u-boot.bin\narm_64bit=1\n",
        "cmdline.txt": b"console=serial0,115200 migos\n",
        "boot.scr": content(rng, 4096, 1.0),
        "migos.itb": content(rng, 512 * 1024, 1.0),
    } if base_files else {}
    files.update(p1_files or {})
    work = tempfile.mkdtemp(prefix="old-disk-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        boot = os.path.join(work, "p1.img")
        make_fat(boot, p1_size_mib, "bootfs", files)
        _copy_into(path, p1[0], boot)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(path, "r+b") as f:
        f.seek(p2[0])
        n = min(p2_pattern_mib * MIB, p2[1])
        f.write((b"OLD-ROOT-FS-" * (n // 12 + 1))[:n])
    return {"path": path, "p1": p1, "p2": p2, "size": size_mib * MIB, "files": files}


def compress(src, fmt, dst=None, level=None):
    """``src`` compressed as gz/xz/zst/zip with the command-line tools; returns the path."""
    ext = {"gz": ".gz", "xz": ".xz", "zst": ".zst", "zip": ".zip", "raw": ""}[fmt]
    dst = dst or src + ext
    if fmt == "raw":
        return src
    if os.path.exists(dst):
        os.unlink(dst)
    if fmt == "gz":
        with open(dst, "wb") as out:
            subprocess.run(["gzip", "-c", "-%d" % (level or 1), src], stdout=out, check=True)
    elif fmt == "xz":
        with open(dst, "wb") as out:
            subprocess.run(["xz", "-c", "-T1", "-%d" % (level or 0), src], stdout=out, check=True)
    elif fmt == "zst":
        subprocess.run(["zstd", "-q", "-f", "-%d" % (level or 3), src, "-o", dst], check=True)
    elif fmt == "zip":
        import zipfile
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=level or 1) as z:
            z.write(src, os.path.basename(src))
    return dst


# helpers for checking disks (no root needed: everything works on image files) ---------------

def partitions(path):
    """[(number, start_bytes, size_bytes, type_hex)] from sfdisk's reading of the MBR/EBRs."""
    out = subprocess.run(["sfdisk", "-J", str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, check=True).stdout
    table = json.loads(out.decode())["partitiontable"]
    res = []
    for p in table.get("partitions", []):
        num = int(p["node"].rsplit(str(path), 1)[-1].lstrip("p") or 0)
        res.append((num, p["start"] * SECTOR, p["size"] * SECTOR, p["type"]))
    return res


def region_sha(path, offset, size):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(offset)
        left = size
        while left:
            b = f.read(min(left, 4 * MIB))
            if not b:
                raise ValueError("region beyond end of %s" % path)
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def read_region(path, offset, size):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def copy_region(path, offset, size, dst):
    with open(path, "rb") as f, open(dst, "wb") as out:
        f.seek(offset)
        left = size
        while left:
            b = f.read(min(left, 4 * MIB))
            out.write(b)
            left -= len(b)
    return dst


def fat_files(path, offset):
    """{relative path: bytes} of every file in the FAT at ``offset`` of ``path`` (via mtools)."""
    tmp = tempfile.mkdtemp(prefix="fatx-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        _run(["mcopy", "-s", "-n", "-m", "-i", "%s@@%d" % (path, offset), "::*", tmp + "/"])
        out = {}
        for root, _dirs, names in os.walk(tmp):
            for n in names:
                full = os.path.join(root, n)
                with open(full, "rb") as f:
                    out[os.path.relpath(full, tmp)] = f.read()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fsck_region(path, offset, size, kind):
    """Run fsck.vfat -n / e2fsck -fn on a copy of the region; return (ok, output)."""
    tmp = tempfile.mkdtemp(prefix="fsck-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        img = copy_region(path, offset, size, os.path.join(tmp, "part.img"))
        argv = ["fsck.vfat", "-n", img] if kind == "vfat" else ["e2fsck", "-fn", img]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return p.returncode == 0, p.stdout.decode("utf-8", "replace")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_sha(path):
    return region_sha(path, 0, os.path.getsize(path))


def file_sha_except(path, holes):
    """sha256 of the file with the byte ranges ``holes`` [(offset, length)] read as zeros."""
    import hashlib
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            b = bytearray(f.read(4 * MIB))
            for off, n in holes:
                a, z = max(off, pos), min(off + n, pos + len(b))
                if a < z:
                    b[a - pos:z - pos] = bytes(z - a)
            h.update(b)
            pos += len(b)
    return h.hexdigest()


# a kit for migrate's integration tests and the benchmark -------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {"deviceType": "raspberrypi3", "apiEndpoint": "http://127.0.0.1:9",
          "applicationId": 1234567, "apiKey": "provisioning-key-SECRET-0123456789",
          "uuid": "0123456789abcdef0123456789abcdef", "persistentLogging": False}
NM_FILES = {
    "home-wifi": b"[connection]\nid=home-wifi\ntype=wifi\n\n[wifi]\nssid=home\n\n"
                 b"[wifi-security]\nkey-mgmt=wpa-psk\npsk=wifi-passphrase-SECRET\n",
    "office": b"[connection]\nid=office\ntype=ethernet\n\n[ipv4]\nmethod=auto\n",
}
_KITS = {}


class Kit(object):
    """Images and an old-OS disk template under ``base``, built once per process."""

    def __init__(self, base, **image_kw):
        self.base = str(base)
        os.makedirs(self.base, exist_ok=True)
        self.raw = os.path.join(self.base, "balena.img")
        self.image = make_balena_image(self.raw, "raspberrypi3", **image_kw)
        self.old = os.path.join(self.base, "old-disk.img")
        self.old_info = make_old_os_disk(self.old, 256, 4, 64)
        self.config = os.path.join(self.base, "config.json")
        self.write_config(self.config)
        self.nm = []
        for name, data in sorted(NM_FILES.items()):
            p = os.path.join(self.base, name)
            with open(p, "wb") as f:
                f.write(data)
            self.nm.append(p)
        self._compressed = {}

    def write_config(self, path, **changes):
        data = dict(CONFIG, **changes)
        with open(path, "w") as f:
            json.dump(data, f)
        return path

    def compressed(self, fmt):
        if fmt not in self._compressed:
            self._compressed[fmt] = compress(self.raw, fmt)
        return self._compressed[fmt]

    def fresh_disk(self, name, template=None):
        dst = os.path.join(self.base, name)
        subprocess.run(["cp", "--sparse=always", template or self.old, dst], check=True)
        return dst

    def journal_holes(self, old_info=None):
        old_info = old_info or self.old_info
        end = old_info["p1"][0] + old_info["p1"][1]
        j = -(-end // (4 * MIB)) * (4 * MIB)
        return [(j, 4096), (j + MIB, 4096)]


def kit(base, **image_kw):
    key = (str(base), tuple(sorted(image_kw.items())))
    if key not in _KITS:
        _KITS[key] = Kit(base, **image_kw)
    return _KITS[key]


class Loop(object):
    """``with Loop(file) as dev:`` a loop device over ``file`` (root only)."""

    def __init__(self, path):
        self.path = path
        self.dev = None

    def __enter__(self):
        self.dev = subprocess.run(["losetup", "-f", "--show", self.path], check=True,
                                  stdout=subprocess.PIPE).stdout.decode().strip()
        return self.dev

    def __exit__(self, *exc):
        subprocess.run(["losetup", "-d", self.dev], check=False)


def migrate_argv(*args):
    import sys
    return [sys.executable, "-m", "migos", "migrate"] + [str(a) for a in args]


def migrate_env(**extra):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "packages", "migos"),
               MIGOS_HTTP_BACKOFF="0.05")
    env.update(extra)
    return env


def run_migrate(*args, **kw):
    kw.setdefault("env", migrate_env())
    return subprocess.run(migrate_argv(*args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, **kw)


def verify_migrated(disk, k, hostname=None, nm=None, config=None, old_info=None):
    """Assert that ``disk`` holds ``k.image`` as balenaOS expects; return a list of problems."""
    problems = []
    img = k.image
    parts = {n: (s, z, t) for n, s, z, t in partitions(disk)}
    if sorted(parts) != [1, 2, 3, 4, 5, 6]:
        return ["partitions %s, want 1..6" % sorted(parts)]
    want_types = {1: "c", 2: "83", 3: "83", 4: "5", 5: "83", 6: "83"}
    for n, t in want_types.items():
        if parts[n][2] != t:
            problems.append("p%d type %s, want %s" % (n, parts[n][2], t))
    names = {1: "boot", 2: "rootA", 3: "rootB", 4: "extended", 5: "state", 6: "data"}
    for n, key in names.items():
        if parts[n][1] != img[key][1]:
            problems.append("p%d size %d, image has %d" % (n, parts[n][1], img[key][1]))
    old_info = old_info or k.old_info
    old_end = old_info["p1"][0] + old_info["p1"][1]
    if parts[1][0] < old_end:
        problems.append("new p1 overlaps the old p1")
    # rootA, rootB, state, data byte-identical to the image's partitions
    for n in (2, 3, 5, 6):
        key = names[n]
        if region_sha(disk, parts[n][0], parts[n][1]) != region_sha(img["path"], *img[key]):
            problems.append("p%d (%s) differs from the image" % (n, key))
    # resin-boot: the image's files, config.json replaced, system-connections added
    got = fat_files(disk, parts[1][0])
    want = dict(img["files"])
    want = {k2.replace("/", os.sep): v for k2, v in want.items()}
    cfg = dict(config or CONFIG)
    if hostname:
        cfg["hostname"] = hostname
    for name, data in (nm or {}).items():
        want[os.path.join("system-connections", name)] = data
    got_cfg = got.pop("config.json", None)
    want.pop("config.json", None)
    if got != want:
        problems.append("resin-boot files differ: extra %s missing %s changed %s" % (
            sorted(set(got) - set(want)), sorted(set(want) - set(got)),
            sorted(n for n in set(got) & set(want) if got[n] != want[n])))
    if got_cfg is None or json.loads(got_cfg.decode()) != cfg:
        problems.append("config.json on resin-boot is %r" % got_cfg)
    ok, out = fsck_region(disk, parts[1][0], parts[1][1], "vfat")
    if not ok:
        problems.append("fsck.vfat: " + out[-300:])
    for n in (2, 3, 5, 6):
        ok, out = fsck_region(disk, parts[n][0], parts[n][1], "ext4")
        if not ok:
            problems.append("e2fsck p%d: %s" % (n, out[-300:]))
    # the old boot partition's bytes were never written
    if region_sha(disk, *old_info["p1"]) != region_sha(old_info["path"], *old_info["p1"]):
        problems.append("the old p1 region was modified")
    return problems
