"""Pure planning for gen_migos-boot: MBR and FAT boot-sector parsing, refusals, layout.

Every function here takes bytes or plain facts and returns data; nothing touches a disk.
"""

import struct

SECTOR = 512
FAT_TYPES = {0x01: "FAT12", 0x04: "FAT16", 0x06: "FAT16", 0x0b: "FAT32", 0x0c: "FAT32 LBA",
             0x0e: "FAT16 LBA"}
FORMAT_START = 8192            # first partition at 4 MiB (erase-block aligned)
MIN_FREE_MARGIN = 256 * 1024   # bytes kept free beyond the staged files


class Refusal(Exception):
    """Why TARGET is not written, and what to do."""

    def __init__(self, problem, remedy):
        Exception.__init__(self, problem)
        self.problem, self.remedy = problem, remedy


def parse_mbr(sector):
    """The four primary entries of an MBR: [(index 1-4, type, start LBA, sectors)]."""
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        return None
    out = []
    for i in range(4):
        e = sector[446 + 16 * i:446 + 16 * (i + 1)]
        ptype = e[4]
        start, count = struct.unpack("<II", e[8:16])
        if ptype and count:
            out.append((i + 1, ptype, start, count))
    return out


def parse_fat_boot(sector):
    """Cluster size and FAT kind of a FAT boot sector, or None if it is not one."""
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        return None
    bps = struct.unpack("<H", sector[11:13])[0]
    spc = sector[13]
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1):
        return None
    if sector[82:87] == b"FAT32":
        kind = "FAT32"
    elif sector[54:57] == b"FAT":
        kind = sector[54:62].decode("ascii", "replace").strip()
    else:
        return None
    return {"kind": kind, "cluster": bps * spc}


def space_needed(sizes, cluster, dirs=0):
    """Bytes the staged files occupy: each file rounded up to clusters, one cluster per dir."""
    used = sum(-(-s // cluster) * cluster for s in sizes) + cluster * (dirs + 1)
    return used + MIN_FREE_MARGIN


def check_disk(facts, force=False):
    """Refusals about the disk itself (before reading any partition)."""
    name = facts["path"]
    if facts["kind"] not in ("block", "image"):
        raise Refusal("%s is neither a block device nor a disk image file" % name,
                      "pass the SD card's whole-disk device (e.g. /dev/sdX) or an image file")
    if facts.get("is_partition"):
        raise Refusal("%s is a partition, not a whole disk" % name,
                      "pass the whole card (e.g. /dev/sdX, not /dev/sdX1)")
    if facts.get("system"):
        raise Refusal("%s holds this machine's running system (%s)" % (name, facts["system"]),
                      "pass the SD card's device, not the system disk")
    if facts.get("mounted"):
        raise Refusal("%s is mounted (%s)" % (name, facts["mounted"]),
                      "unmount every partition of it first")
    if facts["kind"] == "block" and not facts.get("removable") and not force:
        raise Refusal("%s is not a removable disk" % name,
                      "check it is really the SD card, then add --force")
    if facts.get("read_only"):
        raise Refusal("%s is read-only" % name, "check the card's write-protect switch")


def boot_partition(facts, mbr_sector):
    """The first partition, checked to be a FAT partition inside the disk."""
    parts = parse_mbr(mbr_sector)
    if not parts:
        raise Refusal("%s has no MBR partition table" % facts["path"],
                      "use --format to create a fresh boot partition (erases the card)")
    first = parts[0]
    idx, ptype, start, count = first
    if idx != 1:
        raise Refusal("%s has no first partition" % facts["path"],
                      "use --format to create a fresh boot partition (erases the card)")
    if ptype not in FAT_TYPES:
        raise Refusal("%s's first partition has type 0x%02x, not FAT" % (facts["path"], ptype),
                      "use --format to create a fresh boot partition (erases the card)")
    if (start + count) * SECTOR > facts["size"]:
        raise Refusal("%s's first partition runs past the end of the disk" % facts["path"],
                      "use --format to create a fresh boot partition (erases the card)")
    return {"start": start * SECTOR, "size": count * SECTOR, "type": ptype}


def check_fat(facts, part, boot_sector, sizes, dirs, free_bytes=None):
    fat = parse_fat_boot(boot_sector)
    if fat is None:
        raise Refusal("%s's first partition holds no FAT file system" % facts["path"],
                      "use --format to create a fresh boot partition (erases the card)")
    need = space_needed(sizes, fat["cluster"], dirs)
    if part["size"] < need:
        raise Refusal("%s's boot partition is too small (%d KiB, MIGOS needs %d KiB)" % (
            facts["path"], part["size"] // 1024, need // 1024),
            "use a card with a bigger boot partition, or --format")
    if free_bytes is not None and free_bytes < need:
        raise Refusal("%s's boot partition has %d KiB free, MIGOS needs %d KiB" % (
            facts["path"], free_bytes // 1024, need // 1024),
            "remove files from the boot partition, or --format")
    return fat


def format_layout(disk_size, need):
    """(start sector, sectors, FAT bits) of the single partition --format creates."""
    total = disk_size // SECTOR
    count = total - FORMAT_START
    if count * SECTOR < need + 8 * 1024 * 1024:
        raise Refusal("disk of %d KiB is too small for a MIGOS boot card" % (disk_size // 1024),
                      "use a bigger card")
    bits = 32 if count * SECTOR >= 64 * 1024 * 1024 else 16
    return FORMAT_START, count, bits


def staging_order(paths):
    """Files in commit order: everything else first, config.txt (the switch) last."""
    return sorted(p for p in paths if p != "config.txt") + (
        ["config.txt"] if "config.txt" in paths else [])


def parent_dirs(paths):
    dirs = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(len(parts)):
            dirs.add("/".join(parts[:i + 1]))
    return sorted(dirs, key=lambda d: (d.count("/"), d))
