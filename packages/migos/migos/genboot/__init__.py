"""``gen_migos-boot TARBALL TARGET`` (also ``migos gen-boot``): put MIGOS on an SD card.

1. The tarball is checked against the SHA256SUMS next to it and for the MIGOS shape
   (``stage1.tarball``).
2. TARGET (a whole-disk block device or a disk image file) is inspected (``probe``) and
   refused (``plan``) if it is a partition, holds the running system, is mounted, is not
   removable (``--force`` overrides only this one), is read-only, has no FAT first
   partition, or that partition is too small or too full. Nothing is written before
   every check passed.
3. ``--format`` first writes a fresh MBR with one FAT partition at 4 MiB (sfdisk,
   mkfs.fat): the whole card is erased.
4. Every file is copied into ``/.migos-staging/`` on the FAT (mtools, no mount) and read
   back and compared with the tarball's bytes. Only then are the files moved into place,
   ``config.txt`` last, and the staging directory is removed. A card pulled during the
   copy keeps its previous boot files untouched (a stale staging directory is removed
   by the next run); a card pulled during the moves (directory-entry updates only, no
   data) is finished by running the same command again.
"""

import os
import sys

from .. import log
from ..errors import UsageError
from ..stage1 import tarball as boot_tarball
from ..stage2 import fatread
from . import fatswap, mtools, plan, probe
from .mtools import STAGING


def _read_at(path, offset, n=512):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def inspect(target, files, force=False, do_format=False):
    """All checks; returns (facts, partition or None). Raises plan.Refusal."""
    facts = probe.facts(target)
    if "error" in facts:
        raise plan.Refusal("%s: %s" % (target, facts["error"]), "pass an existing TARGET")
    plan.check_disk(facts, force=force)
    if do_format:
        need = plan.space_needed([len(d) for d in files.values()], 4096, len(files))
        return facts, {"layout": plan.format_layout(facts["size"], need)}
    part = plan.boot_partition(facts, _read_at(target, 0))
    fat_boot = _read_at(target, part["start"])
    sizes = [len(d) for d in files.values()]
    fat = plan.check_fat(facts, part, fat_boot, sizes, len(plan.parent_dirs(files)) + 1)
    free = mtools.Fat(target, part["start"]).free_bytes()
    plan.check_fat(facts, part, fat_boot, sizes, len(plan.parent_dirs(files)) + 1, free)
    part["fat"] = fat
    return facts, part


def format_card(target, layout):
    start, count, bits = layout
    mtools.partition(target, start, count)
    mtools.mkfs(target, start, count, bits)
    return {"start": start * plan.SECTOR, "size": count * plan.SECTOR}


def write_files(fat, files):
    """Stage, verify, then move into place (config.txt last), each file whole or not at all."""
    fat.deltree(STAGING)
    fat.mkdir(STAGING)
    for d in plan.parent_dirs(files):
        fat.mkdir(STAGING + "/" + d)
    for rel in sorted(files):
        fat.put(STAGING + "/" + rel, files[rel])
    for rel in sorted(files):
        if fat.get(STAGING + "/" + rel) != files[rel]:
            raise mtools.MtoolsError("%s read back differently from the card" % rel)
    for d in plan.parent_dirs(files):
        fat.mkdir(d)
    for rel in plan.staging_order(files):
        commit(fat, STAGING + "/" + rel, rel)
    fat.deltree(STAGING)
    for rel in sorted(files):
        if fat.get(rel) != files[rel]:
            raise mtools.MtoolsError("%s reads back differently after the move" % rel)


def commit(fat, staged, dest):
    """Put the staged file at ``dest``: a new name is one directory entry (mtools); an
    existing file is replaced by a cluster-ownership swap (``fatswap``), never removed first."""
    if not fat.exists(dest):
        fat.move(staged, dest)
        return
    try:
        fatswap.replace(fat.path, fat.offset, staged, dest)
    except fatswap.Unsupported:
        fat.move(staged, dest)          # FAT12: a few-MiB partition; mtools replaces it
    except (fatswap.SwapError, fatread.FatError) as e:
        raise mtools.MtoolsError("cannot replace %s: %s" % (dest, e))


def run(tarball_path, target, force=False, do_format=False, pretend=False):
    boot_tarball.verify(tarball_path)
    files = boot_tarball.load(tarball_path, check_sums=False).files
    try:
        facts, part = inspect(target, files, force=force, do_format=do_format)
    except plan.Refusal as r:
        raise UsageError(r.problem, r.remedy)
    if pretend:
        log.info("would write %d files to %s" % (len(files), target))
        return 0
    try:
        if do_format:
            log.info("formatting %s: one FAT partition" % target)
            part = format_card(target, part["layout"])
        fat = mtools.Fat(target, part["start"])
        write_files(fat, files)
    except (mtools.MtoolsError, OSError) as e:
        log.event("FAIL", "writing %s failed: %s" % (target, e), level="error")
        raise UsageError("writing %s failed (%s)" % (target, e),
                         "check the card and run the same command again")
    with open(target, "rb+") as f:
        os.fsync(f.fileno())
    log.event("SUCCESS", "MIGOS boot files written to %s (%d files)" % (target, len(files)))
    return 0


def _cli(args):
    return run(args.tarball, args.target, force=args.force, do_format=args.format,
               pretend=args.pretend)


def _add_arguments(p):
    p.add_argument("tarball", metavar="TARBALL", help="migos-boot-NAME.tar.gz (SHA256SUMS next to it)")
    p.add_argument("target", metavar="TARGET", help="the SD card's whole-disk device or a disk image")
    p.add_argument("--format", action="store_true",
                   help="erase TARGET: new MBR with one FAT partition, then write")
    p.add_argument("--force", action="store_true", help="write to a disk that is not removable")
    p.add_argument("--pretend", action="store_true", help="check everything, write nothing")


def register(sub, common_options):
    p = sub.add_parser("gen-boot", help="write the MIGOS boot files onto an SD card (gen_migos-boot)",
                       description=__doc__.split("\n\n")[0])
    common_options(p)
    _add_arguments(p)
    p.set_defaults(func=_cli)


def script_main(argv=None):
    """The ``gen_migos-boot`` entry point: ``migos gen-boot`` under its own name."""
    from ..cli import main
    return main(["gen-boot"] + list(sys.argv[1:] if argv is None else argv))
