"""MBR and EBR sectors: parse and build (pure code, no I/O).

Only what migrate needs: the four primary entries of sector 0, the chain of
extended boot records (EBRs) that describe logical partitions, and rebuilding a
sector with shifted start addresses. Sizes and addresses are in 512-byte sectors.
"""

import struct

SECTOR = 512
SIGNATURE = b"\x55\xaa"
FAT_TYPES = (0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e)
LINUX_TYPES = (0x83,)
EXTENDED_TYPES = (0x05, 0x0f, 0x85)
GPT_PROTECTIVE = 0xee
ENTRY_OFFSET = 446
ENTRY = struct.Struct("<B3sB3sII")  # status, chs first, type, chs last, lba, count


class MbrError(ValueError):
    pass


class Entry(object):
    """One partition table entry. ``index`` is 1..4 in the MBR, 0..1 in an EBR."""

    __slots__ = ("index", "status", "type", "start", "count", "chs_first", "chs_last")

    def __init__(self, index, status, ptype, start, count, chs_first=b"\xfe\xff\xff",
                 chs_last=b"\xfe\xff\xff"):
        self.index = index
        self.status = status
        self.type = ptype
        self.start = start
        self.count = count
        self.chs_first = chs_first
        self.chs_last = chs_last

    @property
    def end(self):
        return self.start + self.count

    @property
    def empty(self):
        return self.type == 0 or self.count == 0

    def __repr__(self):
        return "Entry(%d, type=0x%02x, start=%d, count=%d)" % (self.index, self.type, self.start, self.count)


def parse_table(sector):
    """The four 16-byte entries of an MBR or EBR sector (empty ones included)."""
    if len(sector) < SECTOR:
        raise MbrError("partition sector is %d bytes, need 512" % len(sector))
    if sector[510:512] != SIGNATURE:
        raise MbrError("no 0x55AA boot signature")
    out = []
    for i in range(4):
        status, c1, ptype, c2, lba, count = ENTRY.unpack_from(sector, ENTRY_OFFSET + 16 * i)
        out.append(Entry(i + 1, status, ptype, lba, count, c1, c2))
    return out


def primaries(sector):
    """Non-empty primary entries of sector 0, refusing GPT disks."""
    entries = parse_table(sector)
    if any(e.type == GPT_PROTECTIVE for e in entries):
        raise MbrError("the disk has a GPT partition table (only MBR is supported)")
    return entries


def shifted(sector, delta_sectors):
    """A copy of an MBR sector with every non-empty entry's start moved by ``delta_sectors``.

    CHS fields are set to the LBA-only marker (as balenaOS's own images use beyond 8 GiB).
    Everything else (boot code, disk signature) is kept byte for byte.
    """
    out = bytearray(sector[:SECTOR])
    for e in parse_table(sector):
        if e.empty:
            continue
        start = e.start + delta_sectors
        if start <= 0 or start + e.count > 0xffffffff:
            raise MbrError("partition %d would start at sector %d, outside what MBR can address"
                           % (e.index, start))
        ENTRY.pack_into(out, ENTRY_OFFSET + 16 * (e.index - 1), e.status, b"\xfe\xff\xff", e.type,
                        b"\xfe\xff\xff", start, e.count)
    return bytes(out)


def build(entries, disk_signature=0, boot_code=b""):
    """A fresh MBR sector from ``entries`` (list of Entry, index 1..4). Used by tests."""
    out = bytearray(SECTOR)
    out[:len(boot_code)] = boot_code[:440]
    struct.pack_into("<I", out, 440, disk_signature)
    for e in entries:
        ENTRY.pack_into(out, ENTRY_OFFSET + 16 * (e.index - 1), e.status, e.chs_first, e.type,
                        e.chs_last, e.start, e.count)
    out[510:512] = SIGNATURE
    return bytes(out)


def logical_chain(read_sector, ext_start, ext_count, limit=64):
    """Walk the EBR chain of the extended partition at ``ext_start`` (absolute sectors).

    ``read_sector(lba)`` returns 512 bytes. Returns [(ebr_lba, Entry with absolute start)].
    Raises MbrError on a loop, an entry outside the extended partition, or a bad signature.
    """
    out = []
    ebr = ext_start
    seen = set()
    while True:
        if ebr in seen or len(out) >= limit:
            raise MbrError("the extended partition's EBR chain loops")
        seen.add(ebr)
        entries = parse_table(read_sector(ebr))
        data, link = entries[0], entries[1]
        if not data.empty:
            abs_start = ebr + data.start
            if abs_start < ext_start or abs_start + data.count > ext_start + ext_count:
                raise MbrError("logical partition at sector %d lies outside the extended partition"
                               % abs_start)
            out.append((ebr, Entry(len(out) + 5, data.status, data.type, abs_start, data.count)))
        if link.empty:
            return out
        ebr = ext_start + link.start
        if ebr >= ext_start + ext_count:
            raise MbrError("EBR link points outside the extended partition")
