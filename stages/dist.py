"""dist: publish the artefacts of DESIGN.md section 1 into dist/NAME, atomically.

    boot/                      the boot partition tree (copied from build/NAME/boot)
    migos-boot-NAME.tar.gz     boot/ as a reproducible tarball (sorted, 0:0, mtimes = SOURCE_DATE_EPOCH)
    initramfs.cpio.zst         the initramfs, for direct -kernel/-initrd boots
    vmlinuz                    the kernel
    migos.pyz                  the one-file stage-1 tool (zipapp of packages/migos/migos)
    manifest.json              target, arch, version, SOURCE_DATE_EPOCH, packages, artefacts
    SHA256SUMS                 sha256sum -c format, every file above

Everything is assembled in dist/.NAME.tmp and renamed into place at the end, so dist/NAME
is either the previous complete build or the new complete build.
"""

import gzip
import io
import json
import os
import shutil
import tarfile
import time
import zipfile

from migos.stage1.tarball import sha256_file as sha256

from . import vendor
from .overlay import MIGOS_SRC, source_files

PYZ_MAIN = "import sys\nfrom migos.cli import main\nsys.exit(main())\n"


def tree_files(top):
    """Relative paths of the regular files below ``top``, sorted."""
    out = []
    for d, dirs, names in os.walk(top):
        dirs.sort()
        out += [os.path.relpath(os.path.join(d, n), top) for n in sorted(names)]
    return sorted(out)


def write_tarball(path, top, epoch, arcname="boot"):
    """``top`` as a gzip'd tar: sorted entries, owner 0:0, mtime = epoch, no gzip name/mtime."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = set()
        for rel in tree_files(top):
            parts = rel.split("/")[:-1]
            for i in range(len(parts)):
                dirs.add("/".join(parts[:i + 1]))
        entries = sorted([(d, True) for d in dirs] + [(f, False) for f in tree_files(top)] + [("", True)])
        for rel, is_dir in entries:
            info = tarfile.TarInfo(arcname + ("/" + rel if rel else ""))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = epoch
            if is_dir:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                full = os.path.join(top, rel)
                info.size = os.path.getsize(full)
                info.mode = 0o644
                with open(full, "rb") as f:
                    tar.addfile(info, f)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(buf.getvalue())


def write_pyz(path, epoch):
    """migos.pyz: a zipapp of the migos package, entries sorted with a fixed timestamp."""
    stamp = time.gmtime(max(epoch, 315532800))[:6]   # zip cannot store dates before 1980
    with open(path, "wb") as raw:
        raw.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as z:
            members = [("__main__.py", PYZ_MAIN.encode())]
            for src in source_files():
                rel = os.path.join("migos", os.path.relpath(src, MIGOS_SRC))
                with open(src, "rb") as f:
                    members.append((rel, f.read()))
            for src, rel in vendor.files():     # paho-mqtt for ``migos agent``
                with open(src, "rb") as f:
                    members.append((rel, f.read()))
            for name, data in sorted(members):
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, data)
    os.chmod(path, 0o755)


def manifest(ctx, out, artefacts):
    from . import stamp
    root = stamp.read(ctx.path("rootfs.json"))["packages"]
    with open(ctx.path("fetch", "packages.json")) as f:
        extract = json.load(f)["extract"]
    build_only = set(ctx.target.build_only)
    keep = [p for p in root if p["name"] not in build_only]
    keep += [{"name": p["name"], "version": p["version"], "arch": p["arch"]} for p in extract]
    return {
        "target": ctx.target.name,
        "architecture": ctx.target.arch,
        "version": ctx.version,
        "SOURCE_DATE_EPOCH": ctx.source_date_epoch,
        "packages": sorted(keep, key=lambda p: p["name"]),
        "build_packages": sorted([p for p in root if p["name"] in build_only], key=lambda p: p["name"]),
        "artefacts": [{"path": a, "size": os.path.getsize(os.path.join(out, a)),
                       "sha256": sha256(os.path.join(out, a))} for a in artefacts],
    }


def build_dist(ctx):
    tmp = os.path.join(os.path.dirname(ctx.dist), "." + ctx.target.name + ".tmp")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        assemble(ctx, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(ctx, tmp)


def assemble(ctx, tmp):
    """Every artefact into ``tmp``."""
    name = ctx.target.name
    shutil.copytree(ctx.path("boot"), os.path.join(tmp, "boot"))
    tarball = "migos-boot-%s.tar.gz" % name
    write_tarball(os.path.join(tmp, tarball), os.path.join(tmp, "boot"), ctx.source_date_epoch)
    shutil.copy(ctx.path("initramfs.cpio.zst"), os.path.join(tmp, "initramfs.cpio.zst"))
    from . import kernel
    shutil.copy(kernel.info(ctx)["vmlinuz"], os.path.join(tmp, "vmlinuz"))
    write_pyz(os.path.join(tmp, "migos.pyz"), ctx.source_date_epoch)
    artefacts = ["boot/" + f for f in tree_files(os.path.join(tmp, "boot"))] + [
        tarball, "initramfs.cpio.zst", "vmlinuz", "migos.pyz"]
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest(ctx, tmp, artefacts), f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(tmp, "SHA256SUMS"), "w") as f:
        for a in artefacts + ["manifest.json"]:
            f.write("%s  %s\n" % (sha256(os.path.join(tmp, a)), a))


def publish(ctx, tmp):
    """Swap the complete ``tmp`` in as dist/NAME (the previous build stays until then)."""
    final = ctx.dist
    old = os.path.join(os.path.dirname(final), "." + ctx.target.name + ".old")
    if os.path.exists(old):
        shutil.rmtree(old)
    if os.path.exists(final):
        os.rename(final, old)
    os.rename(tmp, final)
    if os.path.exists(old):
        shutil.rmtree(old)


def remove_build(ctx):
    for d in (ctx.dist, ctx.build):
        if os.path.exists(d):
            shutil.rmtree(d)


def tasks(ctx):
    yield {
        "name": "dist",
        "doc": "publish dist/NAME: boot/, tarball, initramfs, vmlinuz, migos.pyz, manifest.json, SHA256SUMS",
        "actions": [(build_dist, [ctx])],
        "file_dep": [__file__, ctx.path("boot.json"), ctx.path("initramfs.cpio.zst"), ctx.path("kernel.json"),
                     ctx.path("rootfs.json")] + source_files() + [src for src, _ in vendor.files()],
        "targets": [os.path.join(ctx.dist, "SHA256SUMS")],
        "clean": [(remove_build, [ctx])],
    }
