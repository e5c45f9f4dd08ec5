"""The buffered head, the sequential stream, the prefetcher and device checks (no root)."""

import hashlib
import io
import os
import stat

import pytest

from migos.stage2 import blockdev, layout, migrate

MIB = 1 << 20


def image_bytes(n=12 * MIB):
    data = bytearray(n)
    data[0:4] = b"MBR!"
    data[3 * MIB:3 * MIB + 5] = b"hello"     # a non-zero chunk among zero chunks
    data[9 * MIB:] = os.urandom(n - 9 * MIB)
    return bytes(data)


def test_head_keeps_only_nonzero_chunks_and_stream_releases_them():
    data = image_bytes()
    head = migrate.Head(io.BytesIO(data))
    assert head.fill_to(6 * MIB)
    assert head.length == 6 * MIB
    assert head.stored == 2 * MIB          # chunks 0 and 3; the zero chunks are not stored
    assert head.read(3 * MIB, 5) == b"hello" and head.read(1 * MIB, 4) == bytes(4)
    assert head.image_id() == "%s/%d" % (hashlib.sha256(data[:6 * MIB]).hexdigest(), 6 * MIB)
    s = migrate.Stream(head, head.reader)
    buf = bytearray(4 * MIB)
    s.skip_to(2 * MIB)
    assert head.chunks[0] is migrate._GONE and head.chunks[3] is not migrate._GONE
    got = bytearray()
    while s.pos < len(data):
        n = min(4 * MIB, len(data) - s.pos)
        s.readinto(memoryview(buf), n)
        got += buf[:n]
    assert bytes(got) == data[2 * MIB:]
    assert head.chunks == []
    with pytest.raises(Exception, match="truncated"):
        s.readinto(memoryview(buf), 512)


def test_head_limit():
    data = os.urandom(migrate.HEAD_LIMIT + 2 * MIB)
    head = migrate.Head(io.BytesIO(data))
    with pytest.raises(Exception, match="more than"):
        head.fill_to(len(data))


def test_prefetcher_in_order_with_digests():
    data = image_bytes(20 * MIB)
    head = migrate.Head(io.BytesIO(data))
    head.fill_to(MIB)
    s = migrate.Stream(head, head.reader)
    s.skip_to(MIB)
    segs = [layout.Segment(0, "a", MIB, 3 * MIB + 512), layout.Segment(1, "b", 3 * MIB + 512,
                                                                        20 * MIB)]
    pf = migrate.Prefetcher(s, segs, nbuf=2, size=4 * MIB)
    try:
        for seg in segs:
            got = b"".join(bytes(v) for _p, v in pf.segment(seg))
            assert got == data[seg.start:seg.end]
            assert pf.digest(seg) == hashlib.sha256(got).hexdigest()
    finally:
        pf.close()


def test_prefetcher_passes_errors():
    head = migrate.Head(io.BytesIO(bytes(2 * MIB)))
    head.fill_to(MIB)
    s = migrate.Stream(head, head.reader)
    pf = migrate.Prefetcher(s, [layout.Segment(0, "a", 0, 8 * MIB)], nbuf=2, size=MIB)
    with pytest.raises(Exception, match="truncated"):
        for _ in pf.segment(layout.Segment(0, "a", 0, 8 * MIB)):
            pass
    pf.close()


def test_block_device_needs_root(monkeypatch):
    dev = next((p for p in ("/dev/loop0", "/dev/loop1", "/dev/sda", "/dev/vda")
                if os.path.exists(p) and stat.S_ISBLK(os.stat(p).st_mode)), None)
    if dev is None:
        pytest.skip("no block device node to try")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(blockdev.DeviceError, match="needs root"):
        blockdev.Device(dev)


def test_not_a_disk(tmp_path):
    with pytest.raises(blockdev.DeviceError, match="neither"):
        blockdev.Device("/dev/null")
    with pytest.raises(blockdev.DeviceError, match="cannot use"):
        blockdev.Device(str(tmp_path / "missing.img"))
