"""The target device: a block device or a disk image file, written and read with O_DIRECT.

All bulk I/O goes through page-aligned ``mmap`` buffers so that O_DIRECT accepts them; reads
used for verification therefore come from the medium, not from the page cache.  A file system
that refuses O_DIRECT for an image file (tmpfs) gets buffered I/O with ``fsync`` plus
``posix_fadvise(DONTNEED)`` before every verification read instead (logged once).
"""

import errno
import fcntl
import hashlib
import mmap
import os
import stat
import struct

from .. import log
from ..errors import UsageError

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKFLSBUF = 0x1261
BUF = 4 << 20
ALIGN = 4096


class DeviceError(UsageError):
    pass


def _mounted_devs():
    out = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                try:
                    maj, mnr = parts[2].split(":")
                    out[(int(maj), int(mnr))] = parts[4]
                except (IndexError, ValueError):
                    continue
    except OSError:
        pass
    return out


def _sys_block(rdev):
    return "/sys/dev/block/%d:%d" % (os.major(rdev), os.minor(rdev))


def _partition_devs(rdev):
    """(major, minor) of the device and of its partitions."""
    devs = {(os.major(rdev), os.minor(rdev))}
    base = _sys_block(rdev)
    try:
        real = os.path.realpath(base)
        for name in os.listdir(real):
            p = os.path.join(real, name, "dev")
            if os.path.exists(os.path.join(real, name, "partition")) and os.path.exists(p):
                with open(p) as f:
                    maj, mnr = f.read().strip().split(":")
                devs.add((int(maj), int(mnr)))
    except (OSError, ValueError):
        pass
    return devs


def _loops_backing(path):
    real = os.path.realpath(path)
    out = []
    try:
        for name in os.listdir("/sys/block"):
            bf = "/sys/block/%s/loop/backing_file" % name
            try:
                with open(bf) as f:
                    if os.path.realpath(f.read().strip()) == real:
                        with open("/sys/block/%s/dev" % name) as g:
                            maj, mnr = g.read().strip().split(":")
                        out.append((name, os.makedev(int(maj), int(mnr))))
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return out


def mounted_where(path):
    """A mount point that uses ``path`` (a disk or image file) or one of its partitions, or None."""
    st = os.stat(path)
    mounts = _mounted_devs()
    rdevs = []
    if stat.S_ISBLK(st.st_mode):
        rdevs.append(st.st_rdev)
        # a loop device: other loop devices over the same file (e.g. one partition with -o)
        try:
            with open(os.path.join(os.path.realpath(_sys_block(st.st_rdev)), "loop",
                                   "backing_file")) as f:
                backing = f.read().strip()
            rdevs.extend(r for _n, r in _loops_backing(backing) if r != st.st_rdev)
        except OSError:
            pass
    else:
        rdevs.extend(r for _n, r in _loops_backing(path))
    for rdev in rdevs:
        for d in _partition_devs(rdev):
            if d in mounts:
                return mounts[d]
    return None


class Device(object):
    def __init__(self, path, write=True):
        self.path = path
        try:
            st = os.stat(path)
        except OSError as e:
            raise DeviceError("cannot use device %s (%s)" % (path, e.strerror),
                              "pass the whole disk, e.g. --device /dev/mmcblk0")
        self.is_block = stat.S_ISBLK(st.st_mode)
        if not self.is_block and not stat.S_ISREG(st.st_mode):
            raise DeviceError("%s is neither a block device nor a disk image file" % path,
                              "pass the whole disk, e.g. --device /dev/mmcblk0")
        if self.is_block and os.geteuid() != 0:
            raise DeviceError("writing %s needs root" % path, "run migrate as root")
        where = mounted_where(path)
        if where:
            raise DeviceError("%s (or one of its partitions) is mounted on %s" % (path, where),
                              "unmount it first")
        flags = (os.O_RDWR if write else os.O_RDONLY) | getattr(os, "O_CLOEXEC", 0)
        if self.is_block:
            flags |= os.O_EXCL
        self.direct = True
        try:
            self.fd = os.open(path, flags | os.O_DIRECT)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise DeviceError("%s is busy (mounted or in use)" % path, "unmount it first")
            if e.errno != errno.EINVAL:
                raise DeviceError("cannot open %s (%s)" % (path, e.strerror), "check --device")
            self.direct = False
            self.fd = os.open(path, flags)
            log.event("ERROR", "O_DIRECT not supported on %s; using fsync + fadvise" % path,
                      level="warn")
        if self.is_block:
            buf = fcntl.ioctl(self.fd, BLKGETSIZE64, b"\0" * 8)
            self.size = struct.unpack("<Q", buf)[0]
            buf = fcntl.ioctl(self.fd, BLKSSZGET, b"\0" * 4)
            self.sector = struct.unpack("<i", buf)[0]
        else:
            self.size = os.fstat(self.fd).st_size
            self.sector = 512
        if self.sector != 512:
            raise DeviceError("%s has %d-byte logical sectors; only 512 is supported" % (
                path, self.sector))
        self.buf = mmap.mmap(-1, BUF)
        self.view = memoryview(self.buf)
        self.small = mmap.mmap(-1, ALIGN)
        self.small_view = memoryview(self.small)

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass

    def sync(self):
        os.fsync(self.fd)

    def _drop_cache(self, offset, length):
        if not self.direct:
            os.fsync(self.fd)
            try:
                os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_DONTNEED)
            except (AttributeError, OSError):
                pass

    # small, aligned-anywhere accesses ----------------------------------------------------
    def pread_direct(self, offset, length):
        """``length`` bytes at ``offset`` read from the medium (any offset/length)."""
        out = []
        start = offset - offset % 512
        end = offset + length
        end_al = -(-end // 512) * 512
        self._drop_cache(start, end_al - start)
        pos = start
        while pos < end_al:
            n = min(BUF, end_al - pos)
            got = os.preadv(self.fd, [self.view[:n]], pos)
            if got != n:
                raise DeviceError("short read at %d on %s" % (pos, self.path))
            out.append(bytes(self.view[:n]))
            pos += n
        data = b"".join(out)
        return data[offset - start:offset - start + length]

    def pwrite_direct(self, offset, data):
        """Write ``data`` (multiple of 512 bytes) at ``offset`` (multiple of 512)."""
        if offset % 512 or len(data) % 512:
            raise ValueError("unaligned direct write")
        pos = 0
        while pos < len(data):
            n = min(BUF, len(data) - pos)
            self.view[:n] = data[pos:pos + n]
            self.write_buf(offset + pos, n)
            pos += n

    def write_buf(self, offset, n):
        """Write the first ``n`` bytes of ``self.view`` at ``offset``."""
        self.write_view(offset, self.view[:n])

    def write_view(self, offset, view):
        """Write a page-aligned buffer (a memoryview of an mmap) at ``offset``."""
        n = len(view)
        done = 0
        while done < n:
            w = os.pwrite(self.fd, view[done:n], offset + done)
            if w <= 0:
                raise DeviceError("write failed at %d on %s" % (offset + done, self.path))
            done += w

    def hash_region(self, offset, length, progress=None, view=None):
        """sha256 of ``length`` bytes at ``offset`` read from the medium (into ``view``, a
        page-aligned buffer of BUF bytes; default: the device's own buffer)."""
        view = self.view if view is None else view
        h = hashlib.sha256()
        self._drop_cache(offset, length)
        pos = offset
        end = offset + length
        while pos < end:
            n = min(BUF, end - pos)
            got = os.preadv(self.fd, [view[:n]], pos)
            if got != n:
                raise DeviceError("short read at %d on %s" % (pos, self.path))
            h.update(view[:n])
            pos += n
            if progress:
                progress(n)
        return h.hexdigest()

    def write_sector0(self, data):
        """The switch: one 512-byte write at offset 0, flushed before and after."""
        assert len(data) == 512
        os.fsync(self.fd)
        self.small_view[:512] = data
        w = os.pwrite(self.fd, self.small_view[:512], 0)
        if w != 512:
            raise DeviceError("MBR write was short on %s" % self.path)
        os.fsync(self.fd)

    def flush_buffers(self):
        """Drop the block device's page cache (so others see what O_DIRECT wrote)."""
        if self.is_block:
            try:
                fcntl.ioctl(self.fd, BLKFLSBUF, 0)
            except OSError:
                pass
