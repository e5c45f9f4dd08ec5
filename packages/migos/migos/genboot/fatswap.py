"""Replace a file on a FAT file system by a staged copy, whole or not at all.

``mmove -D o`` (mtools) removes the old file before the new name exists, so a card pulled
at that moment has no ``config.txt`` at all. Here the new bytes are already on the card,
staged and read back; the replacement then only moves cluster ownership, in steps that each
end with a flush:

1. (FAT32) the FSInfo free-cluster count and hint are marked unknown, so no driver trusts
   a count that the next steps make wrong;
2. the staged directory entry is deleted: its clusters are now allocated but owned by no
   file (lost clusters; a cut here costs space, never a file);
3. the destination's short entry is pointed at the staged clusters with the new size and
   times: a 19-byte write inside one 32-byte slot, so inside one sector. This is the switch;
4. the old clusters are freed in every FAT copy (a cut before this leaks them, no more).

After a cut between any two steps the destination reads whole, old or new, and
``fsck.fat`` finds at most lost clusters. FAT12 (partitions of a few MiB) is not handled:
``plan`` raises :class:`Unsupported` and the caller falls back to mtools.

``plan`` is pure (reads through a callback, returns the writes); ``apply`` writes them.
"""

import collections
import os
import struct

from ..stage2 import fatread

Write = collections.namedtuple("Write", ["offset", "data"])


class Unsupported(Exception):
    pass


class SwapError(Exception):
    pass


def _fat_entry_writes(fat, read, cluster, value):
    """The writes that set ``cluster``'s entry to ``value`` in every FAT copy."""
    out = []
    for copy in range(fat.nfats):
        base = fat.fat_offset + copy * fat.fat_sectors * fat.bps
        if fat.kind == 16:
            out.append(Write(base + 2 * cluster, struct.pack("<H", value)))
        else:
            old, = struct.unpack("<I", read(base + 4 * cluster, 4))
            out.append(Write(base + 4 * cluster, struct.pack("<I", (old & 0xf0000000) | value)))
    return out


def plan(read, staged_path, dest_path):
    """The steps (lists of writes, flushed one step at a time) that replace ``dest_path`` by
    ``staged_path``; offsets are from the file system's start. Pure but for ``read``."""
    fat = fatread.Fat(read)
    if fat.kind == 12:
        raise Unsupported("FAT12")
    staged, dest = fat.lookup(staged_path), fat.lookup(dest_path)
    if staged is None or staged.is_dir:
        raise SwapError("%s is not a staged file" % staged_path)
    if dest is None or dest.is_dir:
        raise SwapError("%s is not an existing file" % dest_path)
    if staged.cluster and staged.cluster == dest.cluster:
        raise SwapError("%s and %s share their clusters" % (staged_path, dest_path))
    old_chain = fat.chain(dest.cluster) if dest.cluster else []
    steps = []
    if fat.kind == 32 and fat.fsinfo_sector:
        info = fat.fsinfo_sector * fat.bps
        if read(info, 4) == b"RRaA":
            steps.append([Write(info + 488, b"\xff" * 8)])
    steps.append([Write(staged.offset, b"\xe5")] + [Write(o, b"\xe5") for o in staged.lfn_offsets])
    steps.append([Write(dest.offset + 13, staged.raw[13:32])])
    steps.append([w for c in old_chain for w in _fat_entry_writes(fat, read, c, 0)])
    return [s for s in steps if s]


def apply(fd, base, steps, limit=None):
    """Write ``steps`` at ``base`` (the partition's offset) in ``fd``, flushing after each.
    ``limit`` stops after that many single writes (tests: a power cut at every write)."""
    done = 0
    for step in steps:
        for w in step:
            if limit is not None and done >= limit:
                return done
            os.pwrite(fd, w.data, base + w.offset)
            done += 1
        os.fsync(fd)
    return done


def replace(path, base, staged_path, dest_path):
    """Replace ``dest_path`` by ``staged_path`` on the FAT at byte ``base`` of ``path``."""
    fd = os.open(path, os.O_RDWR)
    try:
        steps = plan(lambda off, n: os.pread(fd, n, base + off), staged_path, dest_path)
        apply(fd, base, steps)
    finally:
        os.close(fd)
