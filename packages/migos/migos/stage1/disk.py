"""The boot partition and the disk under it: where, what layout, how much room.

The boot partition is the one mounted at ``ROOT/boot/firmware`` (bookworm) or
``ROOT/boot``. The disk behind it is found through /proc/self/mountinfo and /sys; a
disk image file or device given with ``--disk`` overrides that (tests, images).
"""

import os
import struct

from ..errors import UsageError

SECTOR = 512
MIB = 1024 * 1024
FAT_TYPES = {0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e}
EXTENDED_TYPES = {0x05, 0x0f, 0x85}
LINUX_TYPE = 0x83
GPT_PROTECTIVE = 0xee
# The stage-2 journal lives at 1 MiB and 2 MiB (DESIGN.md 3): p1 must start after 3 MiB.
MIN_P1_START = 3 * MIB
# Smallest card balenaOS fits on next to the old boot partition (the new root A/B,
# state and data partitions); balena's own images need about 2.5 GB unexpanded.
MIN_DISK_BYTES = 3500 * 1000 * 1000


def find_boot(root):
    """The directory of the boot partition below ``root`` (raises UsageError)."""
    for rel in ("boot/firmware", "boot"):
        path = os.path.join(root, rel)
        if os.path.isfile(os.path.join(path, "config.txt")) or \
                os.path.isfile(os.path.join(path, "start.elf")) or \
                os.path.isfile(os.path.join(path, "start4.elf")):
            return path
    raise UsageError("no Raspberry Pi boot partition (config.txt) at %s/boot/firmware or "
                     "%s/boot" % (root.rstrip("/"), root.rstrip("/")),
                     "mount the boot partition there")


def mount_of(path, mountinfo="/proc/self/mountinfo"):
    """(major:minor, fstype, source) of the mount at exactly ``path``, or None."""
    real = os.path.realpath(path)
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        parts = line.split()
        if len(parts) < 10:
            continue
        mnt = parts[4].replace("\\040", " ")
        if mnt == real:
            sep = parts.index("-")
            found = (parts[2], parts[sep + 1], parts[sep + 2])
    return found


def disk_of_partition(majmin, sysfs="/sys"):
    """(disk device path, partition number) of the partition with ``majmin``, or None."""
    link = os.path.join(sysfs, "dev/block", majmin)
    if not os.path.exists(link):
        return None
    real = os.path.realpath(link)
    try:
        with open(os.path.join(real, "partition")) as f:
            partno = int(f.read().strip())
    except (OSError, ValueError):
        return None
    disk = os.path.basename(os.path.dirname(real))
    return "/dev/" + disk, partno


def device_size(path):
    with open(path, "rb") as f:
        return f.seek(0, os.SEEK_END)


class Partition:
    def __init__(self, number, ptype, start, sectors, bootable):
        self.number = number
        self.type = ptype
        self.start = start * SECTOR
        self.size = sectors * SECTOR

    @property
    def end(self):
        return self.start + self.size

    def to_dict(self):
        return {"number": self.number, "type": "0x%02x" % self.type, "start": self.start,
                "size": self.size}


def parse_mbr(sector):
    """The four primary MBR entries (non-empty) of a 512-byte sector; ValueError if no MBR."""
    if len(sector) < SECTOR or sector[510:512] != b"\x55\xaa":
        raise ValueError("no MBR partition table (boot signature missing)")
    parts = []
    for i in range(4):
        e = sector[446 + 16 * i:446 + 16 * (i + 1)]
        boot, ptype, start, count = e[0], e[4], struct.unpack("<I", e[8:12])[0], \
            struct.unpack("<I", e[12:16])[0]
        if ptype == 0 or count == 0:
            continue
        parts.append(Partition(i + 1, ptype, start, count, boot == 0x80))
    return parts


def geometry(disk_path, boot_partno=None):
    """A description of the disk and the reasons it cannot be migrated (empty: fine)."""
    info = {"disk": disk_path, "partitions": [], "problems": []}
    problems = info["problems"]
    try:
        size = device_size(disk_path)
        with open(disk_path, "rb") as f:
            sector = f.read(SECTOR)
    except OSError as e:
        problems.append("cannot read %s (%s)" % (disk_path, e.strerror))
        return info
    info["size"] = size
    try:
        parts = parse_mbr(sector)
    except ValueError as e:
        problems.append(str(e))
        return info
    info["partitions"] = [p.to_dict() for p in parts]
    if any(p.type == GPT_PROTECTIVE for p in parts):
        problems.append("the disk uses a GPT partition table; only MBR disks are supported")
        return info
    if any(p.type in EXTENDED_TYPES for p in parts):
        problems.append("the disk has an extended partition (NOOBS/PINN or a custom layout); "
                        "only the plain boot+root layout is supported")
    p1 = [p for p in parts if p.number == 1]
    if not p1 or p1[0].type not in FAT_TYPES:
        problems.append("partition 1 is not a FAT boot partition")
    elif p1[0].start < MIN_P1_START:
        problems.append("partition 1 starts at %d KiB; MIGOS needs it to start at 3 MiB or later"
                        % (p1[0].start // 1024))
    if not any(p.number == 2 and p.type == LINUX_TYPE for p in parts):
        problems.append("partition 2 is not a Linux root partition")
    if len(parts) > 2:
        problems.append("the disk has %d partitions; only boot (p1) + root (p2) is supported"
                        % len(parts))
    if boot_partno is not None and boot_partno != 1:
        problems.append("the boot partition is partition %d, not 1" % boot_partno)
    for p in parts:
        if p.end > size:
            problems.append("partition %d ends beyond the end of the disk" % p.number)
    if size < MIN_DISK_BYTES:
        problems.append("the disk holds %.1f GB; balenaOS needs at least %.1f GB"
                        % (size / 1e9, MIN_DISK_BYTES / 1e9))
    return info


def boot_disk(root, boot_dir, disk_override=None):
    """(disk path, partition number or None, mount fstype or None) for the boot partition."""
    if disk_override:
        return disk_override, None, None
    m = mount_of(boot_dir)
    if m is None:
        return None, None, None
    majmin, fstype, source = m
    d = disk_of_partition(majmin)
    if d is None:
        return None, None, fstype
    return d[0], d[1], fstype


def free_bytes(path):
    """Free bytes, or None where the file system does not say (some FUSE drivers)."""
    st = os.statvfs(path)
    if st.f_blocks == 0:
        return None
    return st.f_bavail * st.f_frsize


def cluster_size(path):
    return os.statvfs(path).f_bsize or 4096
