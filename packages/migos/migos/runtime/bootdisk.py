"""Find the boot disk and read what `migos init` left on its first FAT partition, without mounting."""

import os
import struct

from ..stage2 import fatread

SETTINGS = "migos/migrate.json"


def candidates(sys_block="/sys/block"):
    """Whole disks worth looking at: SD/eMMC, virtio, SCSI/USB, NVMe (sorted)."""
    try:
        names = os.listdir(sys_block)
    except OSError:
        return []
    keep = [n for n in names if n.startswith(("mmcblk", "vd", "sd", "nvme")) and "boot" not in n
            and "rpmb" not in n]
    return sorted("/dev/" + n for n in keep)


def first_fat_partition(mbr):
    """(offset, size) in bytes of the MBR's first FAT partition, or None. Pure."""
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
        return None
    for i in range(4):
        entry = mbr[446 + 16 * i: 462 + 16 * i]
        ptype = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if ptype in (0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e) and count:
            return start * 512, count * 512
    return None


class BootDisk(object):
    def __init__(self, device, offset, fat, f):
        self.device, self.offset, self.fat, self._f = device, offset, fat, f

    def read(self, path):
        entry = self.fat.lookup(path)
        if entry is None:
            return None
        return self.fat.read_file(entry)

    def listdir(self, path):
        entry = self.fat.lookup(path)
        if entry is None or not entry.is_dir:
            return []
        return sorted(e.name for e in self.fat.listdir(entry.cluster) if e.name not in (".", ".."))

    def close(self):
        self._f.close()


def open_disk(device):
    """A BootDisk if ``device``'s first FAT partition holds migos/migrate.json, else None."""
    try:
        f = open(device, "rb")
    except OSError:
        return None
    try:
        part = first_fat_partition(f.read(512))
        if part is None:
            f.close()
            return None
        offset = part[0]

        def read(pos, n):
            f.seek(offset + pos)
            return f.read(n)
        fat = fatread.Fat(read)
        disk = BootDisk(device, offset, fat, f)
        if fat.lookup(SETTINGS) is None:
            f.close()
            return None
        return disk
    except (fatread.FatError, OSError, ValueError):
        f.close()
        return None


def find(devices=None):
    for dev in devices if devices is not None else candidates():
        disk = open_disk(dev)
        if disk:
            return disk
    return None
