"""The resume journal: two alternating, checksummed 4 KiB records (DESIGN.md 3).

Record layout (4096 bytes, little endian)::

    0   8  magic  b"MIGOSJ\\x00\\x01"
    8   8  seq    record sequence number, grows by one per write
    16  4  n      length of the JSON payload
    20  n  JSON   payload (state, bindings, progress), UTF-8
    20+n 32 sha256 over bytes [0, 20+n)
    ...    zero

Record ``seq`` goes to slot ``seq % 2`` (slot 0 at ``J``, slot 1 at ``J + 1 MiB``; ``J`` is chosen
by :mod:`migos.stage2.layout`).  A write therefore never touches the newest valid record: a torn
write leaves the previous one intact.  Reading picks the valid record with the highest ``seq``.

The payload binds the journal to the device (size and sha256 of the MBR sector as it was
before migrate's first write) and to the image (sha256 of the image's first bytes, see
migrate), so a journal left by another image or on another device is refused.

Encoding and decoding are pure; :func:`read` and :func:`write` take a device object with
``pread_direct(offset, length)`` and ``pwrite_direct(offset, data)`` + ``sync()``.
"""

import hashlib
import json
import struct

from .layout import JOURNAL_RECORD, JOURNAL_STRIDE

MAGIC = b"MIGOSJ\x00\x01"
HEAD = struct.Struct("<8sQI")
VERSION = 1


class JournalError(ValueError):
    pass


def encode(seq, payload):
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    head = HEAD.pack(MAGIC, seq, len(body))
    if len(head) + len(body) + 32 > JOURNAL_RECORD:
        raise JournalError("journal payload too large (%d bytes)" % len(body))
    rec = head + body
    rec += hashlib.sha256(rec).digest()
    return rec + bytes(JOURNAL_RECORD - len(rec))


def decode(block):
    """(seq, payload) or None when the block is not a valid record."""
    if len(block) < HEAD.size:
        return None
    magic, seq, n = HEAD.unpack_from(block, 0)
    if magic != MAGIC or HEAD.size + n + 32 > min(len(block), JOURNAL_RECORD):
        return None
    rec = bytes(block[:HEAD.size + n])
    if hashlib.sha256(rec).digest() != bytes(block[HEAD.size + n:HEAD.size + n + 32]):
        return None
    try:
        payload = json.loads(rec[HEAD.size:].decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("v") != VERSION:
        return None
    return seq, payload


def newest(blocks):
    """The newest valid (seq, payload) among slot blocks, or None."""
    best = None
    for slot, block in enumerate(blocks):
        rec = decode(block)
        if rec is None or rec[0] % 2 != slot:
            continue
        if best is None or rec[0] > best[0]:
            best = rec
    return best


def slot_offset(base, seq):
    return base + (seq % 2) * JOURNAL_STRIDE


def read(dev, base):
    blocks = []
    for slot in (0, 1):
        off = base + slot * JOURNAL_STRIDE
        if off + JOURNAL_RECORD > dev.size:
            blocks.append(b"")
            continue
        blocks.append(dev.pread_direct(off, JOURNAL_RECORD))
    return newest(blocks)


class Journal(object):
    """The journal of one migration: remembers the last seq and writes the next record."""

    def __init__(self, dev, base, seq=0, payload=None):
        self.dev = dev
        self.base = base
        self.seq = seq
        self.payload = dict(payload or {})

    def commit(self, **changes):
        payload = dict(self.payload)
        payload.update(changes)
        payload["v"] = VERSION
        seq = self.seq + 1
        self.dev.pwrite_direct(slot_offset(self.base, seq), encode(seq, payload))
        self.dev.sync()
        self.seq, self.payload = seq, payload
        return payload


def present(path):
    """True when a stage-2 journal record is on the disk at ``path``: some migration has written
    to it, so the point of no return is behind it (restore-boot and the runtime ask this).
    Raises OSError when the disk cannot be read."""
    from . import blockdev, layout
    dev = blockdev.Device(path, write=False)
    try:
        mbr = dev.pread_direct(0, 512)
        return any(read(dev, base) is not None for base in layout.journal_candidates(mbr))
    finally:
        dev.close()
