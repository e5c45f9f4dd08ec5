"""Format detection and bounded streaming decompression (no root)."""

import gzip
import io
import lzma
import random
import zipfile

import pytest

from migos.stage2 import formats

MIB = 1 << 20


def payload(size=3 * MIB, seed=0):
    rng = random.Random(seed)
    return rng.getrandbits(8 * (size // 2)).to_bytes(size // 2, "little") + \
        (b"compressible line\n" * (size // 18 + 1))[:size - size // 2]


def zst(data):
    import zstandard
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def zip_seekable(data):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("image.img", data)
    return b.getvalue()


class NoSeek(io.RawIOBase):
    def __init__(self):
        self.b = io.BytesIO()

    def writable(self):
        return True

    def write(self, d):
        return self.b.write(d)


def zip_streamed(data, method=zipfile.ZIP_DEFLATED):
    ns = NoSeek()
    with zipfile.ZipFile(ns, "w", method) as z:
        with z.open("image.img", "w") as f:
            f.write(data)
    return ns.b.getvalue()


def zip_stored(data):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("image.img", data)
    return b.getvalue()


COMPRESSORS = {
    "raw": lambda d: d,
    "gzip": lambda d: gzip.compress(d, 1),
    "gzip-multi": lambda d: gzip.compress(d[:len(d) // 3], 1) + gzip.compress(d[len(d) // 3:], 1),
    "xz": lambda d: lzma.compress(d, preset=0),
    "zstd": zst,
    "zstd-multi": lambda d: zst(d[:MIB]) + zst(d[MIB:]),
    "zip": zip_seekable,
    "zip-descriptor": zip_streamed,
    "zip-stored": zip_stored,
}
FORMAT = {"raw": "raw", "gzip": "gzip", "gzip-multi": "gzip", "xz": "xz", "zstd": "zstd",
          "zstd-multi": "zstd", "zip": "zip", "zip-descriptor": "zip", "zip-stored": "zip"}


def read_all(reader, n=256 * 1024):
    out = []
    while True:
        b = reader.read(n)
        if not b:
            break
        assert len(b) <= n
        out.append(b)
    reader.finish()
    return b"".join(out)


class Trickle(object):
    """A source that returns at most 1000 bytes per read (like a slow socket)."""

    def __init__(self, data):
        self.b = io.BytesIO(data)

    def read(self, n):
        return self.b.read(min(n, 1000))


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_roundtrip_and_detection(name):
    data = payload()
    blob = COMPRESSORS[name](data)
    fmt, reader, _counted = formats.open_image(io.BytesIO(blob))
    assert fmt == FORMAT[name]
    assert read_all(reader) == data


@pytest.mark.parametrize("name", ["gzip", "xz", "zstd", "zip-descriptor"])
def test_trickling_source(name):
    data = payload(MIB)
    fmt, reader, _c = formats.open_image(Trickle(COMPRESSORS[name](data)))
    assert read_all(reader, 4096) == data


def test_detection_ignores_names_and_raw_fallback():
    assert formats.detect(b"\x1f\x8b\x08\x00") == "gzip"
    assert formats.detect(b"\xfd7zXZ\x00\x00") == "xz"
    assert formats.detect(b"\x28\xb5\x2f\xfd") == "zstd"
    assert formats.detect(b"PK\x03\x04") == "zip"
    assert formats.detect(b"\xfa\xb8\x00\x10") == "raw"
    assert formats.detect(b"") == "raw"


@pytest.mark.parametrize("name", ["gzip", "xz", "zstd", "zip"])
def test_bounded_output_on_extreme_ratio(name):
    # 64 MiB of zeros compress to almost nothing; every read must stay bounded
    data = bytes(64 * MIB)
    blob = {"gzip": lambda: gzip.compress(data, 9), "xz": lambda: lzma.compress(data, preset=1),
            "zstd": lambda: zst(data), "zip": lambda: zip_seekable(data)}[name]()
    fmt, reader, _c = formats.open_image(io.BytesIO(blob))
    total = 0
    while True:
        b = reader.read(1 << 20)
        if not b:
            break
        assert len(b) <= 1 << 20
        total += len(b)
    assert total == len(data)
    # and each decompressor's pending input stays small
    assert len(getattr(reader, "tail", b"")) <= 1 << 20


@pytest.mark.parametrize("name", ["gzip", "xz", "zip", "zip-descriptor", "zip-stored"])
def test_truncated(name):
    data = payload()
    blob = COMPRESSORS[name](data)
    cut = blob[:len(blob) * 2 // 3]
    fmt, reader, _c = formats.open_image(io.BytesIO(cut))
    with pytest.raises(formats.FormatError, match="truncated"):
        read_all(reader)


def test_truncated_zstd_gives_short_stream():
    # zstandard's stream reader ends quietly on a cut frame; migrate catches it because the
    # stream ends before the image's last partition (see migrate.Stream)
    data = payload()
    blob = zst(data)
    fmt, reader, _c = formats.open_image(io.BytesIO(blob[:len(blob) // 2]))
    try:
        got = read_all(reader)
    except formats.FormatError:
        return
    assert len(got) < len(data)


@pytest.mark.parametrize("name", ["gzip", "xz", "zstd", "zip", "zip-descriptor"])
def test_corrupt(name):
    data = payload()
    blob = bytearray(COMPRESSORS[name](data))
    rng = random.Random(5)
    for _ in range(8):
        i = rng.randrange(len(blob) // 4, len(blob) - 64)
        blob[i] ^= 0x5a
    fmt, reader, _c = formats.open_image(io.BytesIO(bytes(blob)))
    with pytest.raises(formats.FormatError):
        got = read_all(reader)
        assert got == data  # never silently wrong


def test_gzip_crc_mismatch_detected():
    blob = bytearray(gzip.compress(payload(MIB), 1))
    blob[-6] ^= 1  # CRC32 in the trailer
    fmt, reader, _c = formats.open_image(io.BytesIO(bytes(blob)))
    with pytest.raises(formats.FormatError, match="corrupt"):
        read_all(reader)


def test_trailing_garbage():
    blob = gzip.compress(payload(MIB), 1) + b"NOT A GZIP MEMBER"
    fmt, reader, _c = formats.open_image(io.BytesIO(blob))
    with pytest.raises(formats.FormatError, match="trailing garbage"):
        read_all(reader)


def test_zip_unsupported_method():
    data = payload(MIB)
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_BZIP2) as z:
        z.writestr("image.img", data)
    with pytest.raises(formats.FormatError, match="method 12"):
        formats.open_image(io.BytesIO(b.getvalue()))


def test_counted_counts_compressed_bytes():
    blob = gzip.compress(payload(MIB), 1)
    fmt, reader, counted = formats.open_image(io.BytesIO(blob))
    read_all(reader)
    assert counted.count == len(blob)
