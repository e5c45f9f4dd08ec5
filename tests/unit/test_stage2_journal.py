"""Journal records: encode/decode, corruption, alternation, torn writes (pure, no root)."""

from hypothesis import given, settings, strategies as st

from migos.stage2 import journal
from migos.stage2.layout import JOURNAL_RECORD, MIB


class FakeDev(object):
    def __init__(self, size=16 * MIB):
        self.size = size
        self.data = bytearray(size)
        self.writes = []
        self.syncs = 0

    def pread_direct(self, off, n):
        return bytes(self.data[off:off + n])

    def pwrite_direct(self, off, data):
        assert off % 512 == 0 and len(data) % 512 == 0
        self.writes.append((off, len(data)))
        self.data[off:off + len(data)] = data

    def sync(self):
        self.syncs += 1


PAYLOAD = {"v": 1, "state": "WRITE", "done": 3, "image": "ab" * 32 + "/1048576",
           "device": {"size": 123, "mbr": "cd" * 32}}


def test_roundtrip():
    block = journal.encode(7, PAYLOAD)
    assert len(block) == JOURNAL_RECORD
    assert journal.decode(block) == (7, PAYLOAD)


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(0, 600), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(pos, bit):
    block = bytearray(journal.encode(5, PAYLOAD))
    block[pos] ^= 1 << bit
    got = journal.decode(bytes(block))
    # either rejected, or the flip hit the zero padding after the record
    assert got is None or got == (5, PAYLOAD)
    if got is not None:
        n = int.from_bytes(bytes(block[16:20]), "little")
        assert pos >= 20 + n + 32


def test_garbage_and_zeros_rejected():
    assert journal.decode(bytes(JOURNAL_RECORD)) is None
    assert journal.decode(b"MIGOSJ\x00\x01" + b"\xff" * 4088) is None
    assert journal.decode(b"") is None
    assert journal.decode(journal.encode(1, dict(PAYLOAD, v=99))) is None


def test_alternation_and_newest():
    dev = FakeDev()
    base = 8 * MIB
    j = journal.Journal(dev, base)
    for i in range(1, 6):
        j.commit(state="WRITE", done=i)
        seq, payload = journal.read(dev, base)
        assert seq == i and payload["done"] == i
    # writes alternate between the two slots, 1 MiB apart
    offs = [o for o, _n in dev.writes]
    assert offs == [base + MIB, base, base + MIB, base, base + MIB]
    assert dev.syncs == 5


def test_torn_write_falls_back_to_previous_record():
    dev = FakeDev()
    base = 8 * MIB
    j = journal.Journal(dev, base)
    j.commit(state="WRITE", done=1)
    j.commit(state="WRITE", done=2)       # seq 2 -> slot 0
    # tear the newest record (seq 2, slot 0): half of it garbage
    dev.data[base + 30:base + 2048] = b"\xaa" * 2018
    seq, payload = journal.read(dev, base)
    assert (seq, payload["done"]) == (1, 1)
    # the next commit after resuming from seq 1 goes to slot 0 again and wins
    j2 = journal.Journal(dev, base, seq, payload)
    j2.commit(done=2)
    assert journal.read(dev, base)[1]["done"] == 2


def test_record_in_the_wrong_slot_is_ignored():
    dev = FakeDev()
    base = 8 * MIB
    dev.data[base:base + JOURNAL_RECORD] = journal.encode(3, PAYLOAD)  # odd seq in slot 0
    assert journal.read(dev, base) is None


def test_payload_too_large():
    import pytest
    with pytest.raises(journal.JournalError):
        journal.encode(1, {"v": 1, "x": "y" * 5000})
