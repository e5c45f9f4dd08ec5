"""Layout planning: where the balenaOS image goes next to the old boot partition (pure code).

Given the old disk's MBR, the disk size and the image's MBR, :func:`plan` decides

* the **journal location** ``J`` (see below);
* one **shift** (a multiple of 4 MiB, possibly negative) added to every image offset from the
  start of the image's resin-boot to the end of its last partition.  That range is copied to
  the disk as one contiguous run, EBRs included: EBR addresses are relative to the extended
  partition, so a constant shift keeps the logical partitions (p5 resin-state, p6 resin-data)
  valid without rewriting them.  The image's primary entries get the same shift in the final
  MBR, which is therefore the image's own MBR (same boot code, disk signature, types, sizes,
  order p1 boot, p2 rootA, p3 rootB, p4 extended) with moved start addresses;
* the **segments**: the copy range cut at every primary partition boundary and into pieces of
  at most 64 MiB.  Each segment is written, read back and verified on its own; the journal
  records how many are done.  Segment 0 is always exactly the image's resin-boot.

Journal location
----------------
``J = align_up(end of old p1, 4 MiB)``; the two journal records (4 KiB each) live at ``J`` and
``J + 1 MiB``; the new resin-boot starts at or after ``J + 4 MiB``.  So the journal is

* outside the old p1 (MIGOS's boot FAT) and outside every partition of the final layout,
  hence outside every FAT file system before and after the switch;
* never in the first 4 MiB erase block, which holds sector 0 (the MBR, the switch write);
  the design's example (1 MiB and 2 MiB in the gap before p1) collides with an old p1
  that starts at 1 MiB, this location works for every geometry;
* in its own 4 MiB block, apart from the new resin-boot's first block.

Before the switch ``J`` lies in the old root partition p2, which migrate overwrites anyway.
After the switch the same place is found from the new MBR: the new resin-boot starts in
``[J + 4 MiB, J + 8 MiB)``, so ``J = align_down(p1 start, 4 MiB) - 4 MiB``.  :func:`journal_candidates`
returns both readings; the journal's checksum and its binding pick the right one.
"""

from . import mbr

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
SECTOR = mbr.SECTOR
ALIGN = 4 * MIB
JOURNAL_RESERVE = 4 * MIB
JOURNAL_STRIDE = 1 * MIB
JOURNAL_RECORD = 4096
MAX_SEGMENT = 64 * MIB
MBR_LIMIT = 0xffffffff * SECTOR


class LayoutError(ValueError):
    """The geometry does not allow a migration. ``fix`` tells the user what to do."""

    def __init__(self, problem, fix=None):
        ValueError.__init__(self, problem)
        self.problem = problem
        self.fix = fix


def align_up(x, a):
    return -(-x // a) * a


def align_down(x, a):
    return (x // a) * a


class Segment(object):
    __slots__ = ("index", "name", "start", "end")

    def __init__(self, index, name, start, end):
        self.index, self.name, self.start, self.end = index, name, start, end

    @property
    def size(self):
        return self.end - self.start

    def __repr__(self):
        return "Segment(%d, %s, %d..%d)" % (self.index, self.name, self.start, self.end)


class Plan(object):
    """Everything migrate needs to know about where bytes go. Offsets in bytes."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def target(self, image_offset):
        return image_offset + self.shift

    def to_dict(self):
        return {"journal": self.journal, "shift": self.shift, "copy_start": self.copy_start,
                "copy_end": self.copy_end, "boot_start": self.boot_start,
                "boot_end": self.boot_end, "old_p1": list(self.old_p1),
                "segments": len(self.segments), "disk_bytes": self.disk_bytes}


class ImageTable(object):
    """The image's primary partitions, checked for the balenaOS shape."""

    NAMES = ("resin-boot", "resin-rootA", "resin-rootB", "extended")

    def __init__(self, sector):
        try:
            entries = mbr.primaries(sector)
        except mbr.MbrError as e:
            raise LayoutError("the image has no valid MBR (%s)" % e, "use a balenaOS image")
        used = [e for e in entries if not e.empty]
        shape = [e.type for e in entries]
        if len(used) != 4 or entries[0].type not in mbr.FAT_TYPES or \
                entries[1].type not in mbr.LINUX_TYPES or entries[2].type not in mbr.LINUX_TYPES or \
                entries[3].type not in mbr.EXTENDED_TYPES:
            raise LayoutError(
                "the image's partition table is not balenaOS-shaped (types %s; want FAT, Linux, "
                "Linux, extended)" % ", ".join("0x%02x" % t for t in shape),
                "use a balenaOS image for this device type")
        for a, b in zip(entries, entries[1:]):
            if b.start < a.end:
                raise LayoutError("the image's partitions overlap or are out of order",
                                  "use an unmodified balenaOS image")
        self.entries = entries
        self.sector = bytes(sector[:SECTOR])
        self.boot_start = entries[0].start * SECTOR
        self.boot_end = entries[0].end * SECTOR
        self.end = entries[3].end * SECTOR
        self.extended = (entries[3].start * SECTOR, entries[3].end * SECTOR)


def old_boot(sector):
    """(start, end) in bytes of the old OS's p1, which must be a FAT partition."""
    try:
        entries = mbr.primaries(sector)
    except mbr.MbrError as e:
        raise LayoutError("the device has no usable MBR (%s)" % e,
                          "migrate only works on a disk with an MBR and a FAT boot partition p1")
    p1 = entries[0]
    if p1.empty or p1.type not in mbr.FAT_TYPES:
        raise LayoutError("the device's first partition is not a FAT boot partition",
                          "migrate only works on a Raspberry Pi style disk (p1 FAT boot, p2 root)")
    return p1.start * SECTOR, p1.end * SECTOR


def journal_offset(old_p1_end):
    return align_up(old_p1_end, ALIGN)


def journal_candidates(sector):
    """Possible journal offsets given the MBR currently on the disk (old or switched)."""
    out = []
    try:
        p1 = mbr.primaries(sector)[0]
    except mbr.MbrError:
        return out
    if p1.empty:
        return out
    start, end = p1.start * SECTOR, p1.end * SECTOR
    out.append(journal_offset(end))
    j = align_down(start, ALIGN) - JOURNAL_RESERVE
    if j >= ALIGN and j not in out:
        out.append(j)
    return out


def segments_for(table, max_segment=MAX_SEGMENT):
    cuts = set()
    names = []
    for name, e in zip(ImageTable.NAMES, table.entries):
        cuts.add(e.start * SECTOR)
        cuts.add(e.end * SECTOR)
        names.append((e.start * SECTOR, e.end * SECTOR, name))
    cuts = sorted(c for c in cuts if table.boot_start <= c <= table.end)
    out = []
    for a, b in zip(cuts, cuts[1:]):
        name = "gap"
        for s, e, n in names:
            if s <= a and b <= e:
                name = n
        if name == "resin-boot":
            out.append(Segment(len(out), name, a, b))
            continue
        pos = a
        while pos < b:
            nxt = min(b, pos + max_segment)
            out.append(Segment(len(out), name, pos, nxt))
            pos = nxt
    return out


def plan(disk_bytes, old_mbr, image_mbr, max_segment=MAX_SEGMENT):
    """Plan the migration or raise :class:`LayoutError` naming what does not fit."""
    if disk_bytes % SECTOR:
        raise LayoutError("device size %d is not a multiple of 512" % disk_bytes)
    old_start, old_end = old_boot(old_mbr)
    if old_end > disk_bytes:
        raise LayoutError("the device's p1 ends beyond the end of the device",
                          "check that --device names the whole disk")
    table = ImageTable(image_mbr)
    journal = journal_offset(old_end)
    first_free = journal + JOURNAL_RESERVE
    shift = align_up(first_free - table.boot_start, ALIGN)
    new_boot = table.boot_start + shift
    need = table.end + shift
    if need > MBR_LIMIT:
        raise LayoutError("the migrated layout would end beyond 2 TiB, which MBR cannot address")
    if need > disk_bytes:
        raise LayoutError(
            "the disk is too small: the image needs %d MiB after the old boot partition "
            "(up to %d MiB), the disk has %d MiB" % (
                (table.end - table.boot_start) // MIB, need // MIB, disk_bytes // MIB),
            "use a larger SD card or a smaller image")
    new_mbr = mbr.shifted(table.sector, shift // SECTOR)
    segs = segments_for(table, max_segment)
    p = Plan(disk_bytes=disk_bytes, old_p1=(old_start, old_end), journal=journal,
             journal_slots=(journal, journal + JOURNAL_STRIDE), shift=shift,
             copy_start=table.boot_start, copy_end=table.end, boot_start=table.boot_start,
             boot_end=table.boot_end, new_boot_start=new_boot, new_mbr=new_mbr,
             segments=segs, table=table, need=need)
    check(p)
    return p


def check(p):
    """Invariants of the power-cut guarantee; an AssertionError here is a planning bug."""
    old_start, old_end = p.old_p1
    writes = [(s, s + JOURNAL_RECORD) for s in p.journal_slots]
    writes.append((p.target(p.copy_start), p.target(p.copy_end)))
    for a, b in writes:
        assert a >= ALIGN, "write inside the MBR's erase block"
        assert b <= old_start or a >= old_end, "write overlaps the old p1"
        assert b <= p.disk_bytes, "write beyond the disk"
    assert p.journal >= old_end
    assert p.journal + JOURNAL_RESERVE <= p.new_boot_start < p.journal + JOURNAL_RESERVE + ALIGN
    assert p.shift % ALIGN == 0
    assert p.segments[0].start == p.boot_start and p.segments[0].end == p.boot_end
    assert p.segments[-1].end == p.copy_end
    for a, b in zip(p.segments, p.segments[1:]):
        assert a.end == b.start
    assert p.journal in journal_candidates(p.new_mbr)
    return True
