"""Image formats: detection by magic bytes and bounded streaming decompression (stdlib + zstandard).

:func:`open_image` wraps a raw byte source (anything with ``read(n)``) and returns a reader whose
``read(n)`` gives at most ``n`` decompressed bytes (``b""`` at the end) and whose ``finish()``
reads to the end of the compressed stream and raises :class:`FormatError` unless it ended
cleanly (gzip and zip CRC32, xz check, zstd frame checksum when present).

Memory stays bounded whatever the compression ratio: every decompression step is asked for at
most ``n`` bytes (zlib/lzma ``max_length``, zstandard's stream reader).  A zip archive is read as
a stream from its first local file header (no central directory, nothing unpacked to disk):
stored or deflated members, with or without a data descriptor, zip64 sizes.
"""

import lzma
import os
import struct
import zlib

READ = 1 << 20

GZIP, XZ, ZSTD, ZIP, RAW = "gzip", "xz", "zstd", "zip", "raw"
MAGICS = ((b"\x1f\x8b", GZIP), (b"\xfd7zXZ\x00", XZ), (b"\x28\xb5\x2f\xfd", ZSTD),
          (b"PK\x03\x04", ZIP))


class FormatError(ValueError):
    pass


def detect(head):
    for magic, name in MAGICS:
        if head.startswith(magic):
            return name
    return RAW


def read_exact(reader, n):
    """Up to ``n`` bytes from ``reader``, fewer only at the end of the stream."""
    parts = []
    while n > 0:
        b = reader.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


class Counted(object):
    """Wraps the raw source: counts bytes, lets a few bytes be pushed back."""

    def __init__(self, src):
        self.src = src
        self.pending = b""
        self.count = 0

    def read(self, n=READ):
        if self.pending:
            out, self.pending = self.pending[:n], self.pending[n:]
        else:
            out = self.src.read(n)
        self.count += len(out)
        return out

    def unread(self, data):
        if data:
            self.pending = data + self.pending
            self.count -= len(data)

    def read_exact(self, n):
        return read_exact(self, n)


class RawReader(object):
    format = RAW

    def __init__(self, src):
        self.src = src

    def read(self, n=READ):
        return self.src.read(n)

    def finish(self):
        while self.src.read(READ):
            pass


class _ObjReader(object):
    """Common loop for zlib/lzma decompress objects with max_length."""

    format = None

    def __init__(self, src):
        self.src = src
        self.dec = self._new()
        self.tail = b""          # compressed input not yet given to dec
        self.ended = False       # the last member/stream is complete and no input follows

    def _new(self):
        raise NotImplementedError

    def _eof(self):
        return self.dec.eof

    def _next_member(self, rest):
        """After one member ended: more input may start another member."""
        while len(rest) < 8:
            more = self.src.read(READ)
            if not more:
                break
            rest += more
        if not rest.strip(b"\x00"):
            # trailing zero padding (xz allows it) or nothing at all
            while True:
                more = self.src.read(READ)
                if not more:
                    self.ended = True
                    return
                if more.strip(b"\x00"):
                    rest = more
                    break
        if detect(rest) != self.format:
            raise FormatError("%s image has trailing garbage after the compressed data" % self.format)
        self.dec = self._new()
        self.tail = rest

    def read(self, n=READ):
        while not self.ended:
            if self._eof():
                self._next_member(self.dec.unused_data + self.tail)
                continue
            data = self.tail
            self.tail = b""
            at_end = False
            if not data and self._needs_input():
                data = self.src.read(READ)
                at_end = not data
            try:
                out = self._decompress(data, n)
            except (zlib.error, lzma.LZMAError, EOFError) as e:
                raise FormatError("the %s image is corrupt (%s)" % (self.format, e))
            if out:
                return out
            if at_end and not self._eof():
                raise FormatError("the %s image is truncated (compressed stream ends early)"
                                  % self.format)
        return b""

    def finish(self):
        while self.read(READ):
            pass


class GzipReader(_ObjReader):
    format = GZIP

    def _new(self):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _needs_input(self):
        return not self.dec.unconsumed_tail

    def _decompress(self, data, n):
        data = self.dec.unconsumed_tail + data
        return self.dec.decompress(data, n)


class XzReader(_ObjReader):
    format = XZ

    def _new(self):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)

    def _needs_input(self):
        return self.dec.needs_input

    def _decompress(self, data, n):
        return self.dec.decompress(data, max_length=n)


class ZstdReader(object):
    format = ZSTD

    def __init__(self, src):
        try:
            import zstandard
        except ImportError:
            raise FormatError("the image is zstd-compressed but the Python module zstandard is "
                              "missing (install python3-zstandard, or use a .gz image)")
        self._error = getattr(zstandard, "ZstdError", Exception)
        dctx = zstandard.ZstdDecompressor()
        try:
            self.reader = dctx.stream_reader(src, read_size=READ, read_across_frames=True)
        except TypeError:  # very old zstandard
            self.reader = dctx.stream_reader(src, read_size=READ)

    def read(self, n=READ):
        try:
            return self.reader.read(n)
        except self._error as e:
            raise FormatError("the zstd image is corrupt (%s)" % e)

    def readinto(self, view):
        """Decompress straight into ``view`` (no temporary bytes object); returns the count."""
        try:
            return self.reader.readinto(view)
        except self._error as e:
            raise FormatError("the zstd image is corrupt (%s)" % e)

    def finish(self):
        while self.read(READ):
            pass


class ZipReader(object):
    """The first member of a zip archive, streamed from its local file header."""

    format = ZIP
    LOCAL = struct.Struct("<4sHHHHHIIIHH")

    def __init__(self, src):
        self.src = src
        head = src.read_exact(self.LOCAL.size)
        if len(head) < self.LOCAL.size:
            raise FormatError("the zip image is truncated (no local file header)")
        (sig, _ver, flags, method, _t, _d, crc, csize, usize, nlen, xlen) = self.LOCAL.unpack(head)
        name_extra = src.read_exact(nlen + xlen)
        if len(name_extra) < nlen + xlen:
            raise FormatError("the zip image is truncated (local file header)")
        extra = name_extra[nlen:]
        self.name = name_extra[:nlen].decode("utf-8", "replace")
        if flags & 1:
            raise FormatError("the zip image is encrypted")
        self.zip64 = False
        i = 0
        while i + 4 <= len(extra):
            tag, size = struct.unpack_from("<HH", extra, i)
            if tag == 1:
                vals = extra[i + 4:i + 4 + size]
                self.zip64 = True
                if usize == 0xffffffff and len(vals) >= 8:
                    usize = struct.unpack_from("<Q", vals, 0)[0]
                    vals = vals[8:]
                if csize == 0xffffffff and len(vals) >= 8:
                    csize = struct.unpack_from("<Q", vals, 0)[0]
            i += 4 + size
        self.descriptor = bool(flags & 8)
        self.method = method
        self.crc_expected = None if self.descriptor else crc
        self.usize = None if self.descriptor else usize
        self.left = None if self.descriptor else csize
        self.crc = 0
        self.out = 0
        self.done = False
        if method == 8:
            self.dec = zlib.decompressobj(-zlib.MAX_WBITS)
        elif method == 0:
            if self.descriptor:
                raise FormatError("the zip image stores its member without sizes; repack it")
            self.dec = None
        else:
            raise FormatError("the zip image uses compression method %d (only stored and deflate "
                              "are supported)" % method)

    def _raw(self, n):
        if self.left is not None:
            n = min(n, self.left)
            if n == 0:
                return b""
        data = self.src.read(n)
        if self.left is not None:
            self.left -= len(data)
        return data

    def read(self, n=READ):
        while not self.done:
            if self.dec is None:
                data = self._raw(n)
                if not data:
                    if self.left:
                        raise FormatError("the zip image is truncated")
                    self._end(b"")
                    continue
                out = data
            else:
                if self.dec.eof:
                    self._end(self.dec.unused_data)
                    continue
                data = b""
                if not self.dec.unconsumed_tail:
                    data = self._raw(READ)
                    if not data:
                        raise FormatError("the zip image is truncated (deflate stream ends early)")
                try:
                    out = self.dec.decompress(self.dec.unconsumed_tail + data, n)
                except zlib.error as e:
                    raise FormatError("the zip image is corrupt (%s)" % e)
            if out:
                self.crc = zlib.crc32(out, self.crc)
                self.out += len(out)
                return out
        return b""

    def _end(self, rest):
        self.done = True
        if self.descriptor:
            self.src.unread(rest)
            d = self.src.read_exact(4)
            if d == b"PK\x07\x08":
                d = self.src.read_exact(4)
            if len(d) < 4:
                raise FormatError("the zip image is truncated (no data descriptor)")
            self.crc_expected = struct.unpack("<I", d)[0]
        if self.crc_expected is not None and self.crc & 0xffffffff != self.crc_expected:
            raise FormatError("the zip image is corrupt (CRC32 mismatch)")
        if self.usize is not None and self.usize != self.out:
            raise FormatError("the zip image is corrupt (size mismatch)")

    def finish(self):
        while self.read(READ):
            pass
        while self.src.read(READ):  # central directory etc.
            pass


def open_image(src):
    """Detect the format from the first bytes of ``src``; return (format, reader)."""
    counted = Counted(src)
    head = counted.read_exact(8)
    counted.unread(head)
    fmt = detect(head)
    if fmt == GZIP:
        return fmt, GzipReader(counted), counted
    if fmt == XZ:
        return fmt, XzReader(counted), counted
    if fmt == ZSTD:
        return fmt, ZstdReader(counted), counted
    if fmt == ZIP:
        return fmt, ZipReader(counted), counted
    return fmt, RawReader(counted), counted


# up-front completeness checks for local (seekable) files ---------------------------------------

def _zstd_walk(f, size):
    """Walk zstd frames by their headers (no decompression); raise FormatError if cut short."""
    pos = 0
    while pos < size:
        f.seek(pos)
        head = f.read(18)
        if len(head) < 4:
            raise FormatError("the zstd image is truncated (frame header)")
        magic = struct.unpack_from("<I", head)[0]
        if 0x184d2a50 <= magic <= 0x184d2a5f:  # skippable frame
            if len(head) < 8:
                raise FormatError("the zstd image is truncated (skippable frame)")
            pos += 8 + struct.unpack_from("<I", head, 4)[0]
            continue
        if magic != 0xfd2fb528:
            if pos and not head.strip(b"\x00"):
                return
            raise FormatError("the zstd image has garbage at byte %d" % pos)
        if len(head) < 5:
            raise FormatError("the zstd image is truncated (frame header)")
        fhd = head[4]
        single = (fhd >> 5) & 1
        fcs_flag = fhd >> 6
        dict_flag = fhd & 3
        checksum = (fhd >> 2) & 1
        hlen = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag] + \
            ((1 if single else 0), 2, 4, 8)[fcs_flag]
        pos += hlen
        while True:
            f.seek(pos)
            bh = f.read(3)
            if len(bh) < 3:
                raise FormatError("the zstd image is truncated (compressed stream ends early)")
            v = bh[0] | (bh[1] << 8) | (bh[2] << 16)
            last, btype, bsize = v & 1, (v >> 1) & 3, v >> 3
            if btype == 3:
                raise FormatError("the zstd image is corrupt (reserved block type)")
            pos += 3 + (1 if btype == 1 else bsize)
            if pos > size:
                raise FormatError("the zstd image is truncated (compressed stream ends early)")
            if last:
                break
        pos += 4 if checksum else 0
        if pos > size:
            raise FormatError("the zstd image is truncated (no frame checksum)")


def precheck_file(path, fmt, need=None):
    """Cheap checks that a local image file is complete, before anything is written.

    raw: at least ``need`` bytes; xz: stream footer magic at the end; zip: an end-of-central-
    directory record at the end; zstd: every frame's block headers present (a header walk, no
    decompression).  gzip cannot be checked without inflating it all: a cut or corrupt .gz is
    found when the stream reaches the damage.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if fmt == RAW:
            if need is not None and size < need:
                raise FormatError("the image is truncated: %d bytes, its partitions need %d" % (
                    size, need))
        elif fmt == XZ:
            f.seek(max(0, size - 2))
            if f.read(2) != b"YZ":
                raise FormatError("the xz image is truncated (no stream footer)")
        elif fmt == ZIP:
            f.seek(max(0, size - 65558))
            if b"PK\x05\x06" not in f.read():
                raise FormatError("the zip image is truncated (no central directory)")
        elif fmt == ZSTD:
            _zstd_walk(f, size)
