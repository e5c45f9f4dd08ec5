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
                     p2_pattern_mib=4):
    """A Raspbian-like disk image: MBR, p1 FAT boot (with ``p1_files``), p2 Linux to the end.

    p2 gets a recognisable pattern in its first ``p2_pattern_mib`` MiB (no real root fs).
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
    }
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
