"""A small read-only FAT12/16/32 reader (pure code over a ``read(offset, length)`` callback).

Used twice: on the image stream's buffered head, to find resin-boot's volume label and
``device-type.json`` before anything is written (the callback raises :class:`NeedMore` when the
bytes are not buffered yet), and on the disk after config injection, to read the injected files
back through O_DIRECT and compare them.  Long (VFAT) names are supported; only what migrate
needs is implemented (no writing, no deleted-entry recovery).  Each entry also says where its
directory slots are, for ``genboot.fatswap``, which replaces files in place.
"""

import struct


class FatError(ValueError):
    pass


class NeedMore(Exception):
    """The callback does not have bytes up to ``end`` (exclusive) yet."""

    def __init__(self, end):
        Exception.__init__(self, end)
        self.end = end


class Entry(object):
    __slots__ = ("name", "attr", "cluster", "size", "offset", "raw", "lfn_offsets")

    def __init__(self, name, attr, cluster, size, offset=None, raw=None, lfn_offsets=()):
        self.name, self.attr, self.cluster, self.size = name, attr, cluster, size
        self.offset = offset            # of its 32-byte short entry, from the file system's start
        self.raw = raw                  # those 32 bytes
        self.lfn_offsets = tuple(lfn_offsets)   # of its long-name slots

    @property
    def is_dir(self):
        return bool(self.attr & 0x10)


class Fat(object):
    def __init__(self, read):
        self.read = read
        bs = read(0, 512)
        if bs[510:512] != b"\x55\xaa" or bs[0] not in (0xeb, 0xe9):
            raise FatError("no FAT boot sector")
        (self.bps, self.spc, self.reserved, self.nfats, self.root_entries, total16, _media,
         fatsz16) = struct.unpack_from("<HBHBHHBH", bs, 11)
        if self.bps not in (512, 1024, 2048, 4096) or self.spc == 0 or self.nfats == 0:
            raise FatError("implausible FAT boot sector")
        total32, = struct.unpack_from("<I", bs, 32)
        fatsz32, root_cluster = struct.unpack_from("<I4xI", bs, 36)
        self.fat_sectors = fatsz16 or fatsz32
        self.total_sectors = total16 or total32
        root_sectors = (self.root_entries * 32 + self.bps - 1) // self.bps
        self.fat_offset = self.reserved * self.bps
        self.root_offset = (self.reserved + self.nfats * self.fat_sectors) * self.bps
        self.data_offset = self.root_offset + root_sectors * self.bps
        data_sectors = self.total_sectors - (self.data_offset // self.bps)
        self.clusters = data_sectors // self.spc
        self.cluster_bytes = self.spc * self.bps
        if self.clusters < 4085:
            self.kind = 12
        elif self.clusters < 65525:
            self.kind = 16
        else:
            self.kind = 32
        self.root_cluster = root_cluster if self.kind == 32 else None
        self.fsinfo_sector = struct.unpack_from("<H", bs, 48)[0] if self.kind == 32 else None
        label_at = 71 if self.kind == 32 else 43
        self.boot_label = bs[label_at:label_at + 11].decode("ascii", "replace").rstrip()

    # clusters --------------------------------------------------------------------------
    def next_cluster(self, c):
        if self.kind == 16:
            v, = struct.unpack("<H", self.read(self.fat_offset + 2 * c, 2))
            return None if v >= 0xfff8 else v
        if self.kind == 32:
            v, = struct.unpack("<I", self.read(self.fat_offset + 4 * c, 4))
            v &= 0x0fffffff
            return None if v >= 0x0ffffff8 else v
        off = self.fat_offset + c + c // 2
        v, = struct.unpack("<H", self.read(off, 2))
        v = (v >> 4) if c & 1 else (v & 0xfff)
        return None if v >= 0xff8 else v

    def chain(self, c):
        out = []
        while c is not None and 2 <= c < self.clusters + 2:
            out.append(c)
            if len(out) > self.clusters:
                raise FatError("cluster chain loops")
            c = self.next_cluster(c)
        return out

    def cluster_offset(self, c):
        return self.data_offset + (c - 2) * self.cluster_bytes

    def extents(self, entry):
        """[(offset, length)] of the file's bytes."""
        out = []
        left = entry.size
        for c in self.chain(entry.cluster):
            if left <= 0:
                break
            n = min(left, self.cluster_bytes)
            out.append((self.cluster_offset(c), n))
            left -= n
        if left > 0:
            raise FatError("file %s is shorter on disk than its size" % entry.name)
        return out

    def read_file(self, entry):
        return b"".join(self.read(o, n) for o, n in self.extents(entry))

    # directories -----------------------------------------------------------------------
    def _dir_spans(self, cluster):
        """[(offset, length)] of a directory's slots (the root when ``cluster`` is None or 0)."""
        if cluster is None or cluster == 0:
            if self.kind != 32:
                return [(self.root_offset, self.root_entries * 32)]
            cluster = self.root_cluster
        return [(self.cluster_offset(c), self.cluster_bytes) for c in self.chain(cluster)]

    def _dir_bytes(self, cluster):
        return b"".join(self.read(o, n) for o, n in self._dir_spans(cluster))

    def listdir(self, cluster=None):
        spans = self._dir_spans(cluster)
        raw = b"".join(self.read(o, n) for o, n in spans)
        starts = []
        for o, n in spans:
            starts += [o + k for k in range(0, n - 31, 32)]
        out = []
        lfn = {}
        lfn_at = []
        for i in range(0, len(raw) - 31, 32):
            e = raw[i:i + 32]
            if e[0] == 0:
                break
            if e[0] == 0xe5:
                lfn, lfn_at = {}, []
                continue
            attr = e[11]
            if attr == 0x0f:
                seq = e[0] & 0x1f
                part = e[1:11] + e[14:26] + e[28:32]
                lfn[seq] = part
                lfn_at.append(starts[i // 32])
                continue
            if attr & 0x08:  # volume label
                lfn, lfn_at = {}, []
                continue
            short = e[0:8].rstrip(b" ")
            ext = e[8:11].rstrip(b" ")
            if e[0] == 0x05:
                short = b"\xe5" + short[1:]
            name = short.decode("latin-1") + ("." + ext.decode("latin-1") if ext else "")
            if e[12] & 0x08:
                name = name.split(".")[0].lower() + name[len(name.split(".")[0]):]
            if e[12] & 0x10 and ext:
                base, _, x = name.partition(".")
                name = base + "." + x.lower()
            if lfn:
                data = b"".join(lfn[k] for k in sorted(lfn))
                chars = data.decode("utf-16-le", "replace")
                end = chars.find("\x00")
                name = chars[:end] if end >= 0 else chars.rstrip("\uffff")
            hi, lo = struct.unpack_from("<H", e, 20)[0], struct.unpack_from("<H", e, 26)[0]
            size, = struct.unpack_from("<I", e, 28)
            at = lfn_at
            lfn, lfn_at = {}, []
            if name in (".", ".."):
                continue
            out.append(Entry(name, attr, (hi << 16) | lo, size, starts[i // 32], e, at))
        return out

    def volume_label(self):
        if self.kind == 32:
            raw = self._dir_bytes(None)
        else:
            raw = self.read(self.root_offset, self.root_entries * 32)
        for i in range(0, len(raw) - 31, 32):
            e = raw[i:i + 32]
            if e[0] == 0:
                break
            if e[0] != 0xe5 and e[11] & 0x08 and e[11] != 0x0f:
                return e[0:11].decode("ascii", "replace").rstrip()
        return self.boot_label

    def lookup(self, path):
        """The Entry at ``path`` ('a/b.json'), matching names case-insensitively, or None."""
        cluster = None
        parts = [p for p in path.split("/") if p]
        entry = None
        for i, part in enumerate(parts):
            found = None
            for e in self.listdir(cluster):
                if e.name.lower() == part.lower():
                    found = e
                    break
            if found is None:
                return None
            entry = found
            if i < len(parts) - 1:
                if not found.is_dir:
                    return None
                cluster = found.cluster
        return entry
