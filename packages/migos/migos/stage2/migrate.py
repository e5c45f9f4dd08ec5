"""``migos migrate``: stream a balenaOS image next to the old boot partition, verify, switch.

The state machine is in :mod:`states`, the layout in :mod:`layout`, the journal in
:mod:`journal`.  This module does the I/O in that order:

1. PREFLIGHT (no writes): config.json, NetworkManager files, hostname, the device (not
   mounted, root for block devices, MBR with a FAT p1), the image stream's head: its MBR
   (balenaOS shape), then resin-boot's bytes until ``device-type.json`` can be read
   (held in RAM, all-zero MiBs not stored, at most ``HEAD_LIMIT`` bytes of data); its ``slug``
   must equal config.json's ``deviceType``.  Any failure: exit 2, nothing written.
2. PLAN: layout.plan and the journal decision (fresh / resume / already done / foreign).
3. WRITE per segment, INJECT after resin-boot, DRAIN, CHECK, SWITCH, DONE (see states).
"""

import hashlib
import json
import mmap
import os
import re
import struct
import queue
import threading
import time

from .. import config as configmod
from .. import log
from ..errors import MigosError, UsageError
from . import blockdev, fatread, formats, inject, journal, layout, mbr, sources, states

MIB = layout.MIB
HEAD_CHUNK = 1 * MIB
HEAD_LIMIT = 48 * MIB
READ_PIECE = 1 * MIB     # largest temporary bytes object taken from a decompressor
BOOT_LABELS = ("resin-boot", "balena-boot")
EXT4_LABELS = {
    2: ("resin-rootA", "balena-rootA"),
    3: ("resin-rootB", "balena-rootB"),
    5: ("resin-state", "balena-state"),
    6: ("resin-data", "balena-data"),
}
HOSTNAME_RE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
_ZERO = bytes(HEAD_CHUNK)
_GONE = object()


class MigrateFailed(MigosError):
    """Failure after the first write: the old boot partition still boots MIGOS; resume."""

    exit_code = 1


# progress ------------------------------------------------------------------------------------

class Progress(object):
    def __init__(self, total, what, interval=2.0, step=0.05):
        self.total = max(total, 1)
        self.what = what
        self.done = 0
        self.t0 = time.monotonic()
        self.last_t = self.t0
        self.last_frac = 0.0
        self.interval = interval
        self.step = step

    def add(self, n):
        self.done += n
        now = time.monotonic()
        frac = float(self.done) / self.total
        if now - self.last_t >= self.interval or frac - self.last_frac >= self.step:
            self.last_t, self.last_frac = now, frac
            self.report(now)

    def report(self, now=None):
        now = now or time.monotonic()
        el = max(now - self.t0, 1e-6)
        rate = self.done / el
        eta = (self.total - self.done) / rate if rate > 0 else None
        log.event("OK", "%s %d/%d MiB (%.0f%%), %.1f MB/s, ETA %s" % (
            self.what, self.done // MIB, self.total // MIB, 100.0 * self.done / self.total,
            rate / 1e6, ("%ds" % eta) if eta is not None else "?"),
            progress=self.what, bytes=self.done, total=self.total,
            mbps=round(rate / 1e6, 1), eta_s=None if eta is None else round(eta, 1))


# the image stream ----------------------------------------------------------------------------

class Head(object):
    """The first bytes of the decompressed image, kept in RAM (zero MiBs not stored)."""

    def __init__(self, reader):
        self.reader = reader
        self.chunks = []
        self.length = 0
        self.stored = 0
        self.sha = hashlib.sha256()
        self.eof = False

    def fill_to(self, end):
        while self.length < end and not self.eof:
            data = formats.read_exact(self.reader, HEAD_CHUNK)
            if len(data) < HEAD_CHUNK:
                self.eof = True
            if not data:
                break
            self.sha.update(data)
            if data == _ZERO:
                self.chunks.append(None)
            else:
                self.chunks.append(data)
                self.stored += len(data)
                if self.stored > HEAD_LIMIT:
                    raise UsageError("resin-boot holds more than %d MiB before device-type.json"
                                     % (HEAD_LIMIT // MIB), "use an unmodified balenaOS image")
            self.length += len(data)
        return self.length >= end

    def read(self, off, n):
        out = []
        end = off + n
        while off < end:
            i, o = divmod(off, HEAD_CHUNK)
            c = self.chunks[i]
            assert c is not _GONE, "head chunk read after release"
            take = min(end - off, HEAD_CHUNK - o)
            out.append(bytes(take) if c is None else c[o:o + take])
            off += take
        return b"".join(out)

    def image_id(self):
        return "%s/%d" % (self.sha.hexdigest(), self.length)


class Stream(object):
    """Sequential image bytes: first the Head's chunks, then the decompressor."""

    def __init__(self, head, reader):
        self.head = head
        self.reader = reader
        self.pos = 0
        self.released = 0

    def skip_to(self, pos):
        while self.pos < pos:
            self.readinto(None, min(4 * MIB, pos - self.pos))

    def readinto(self, view, n):
        """Fill view[:n] (or discard when view is None). Returns the bytes as memoryview/bytes."""
        got = 0
        while got < n:
            if self.pos < self.head.length:
                take = min(n - got, self.head.length - self.pos)
                data = self.head.read(self.pos, take)
                # the stream never goes back: give the memory of passed chunks back
                for i in range(self.released, (self.pos + take) // HEAD_CHUNK):
                    self.head.chunks[i] = _GONE
                self.released = max(self.released, (self.pos + take) // HEAD_CHUNK)
            else:
                if self.head.chunks:
                    self.head.chunks = []
                if view is not None and hasattr(self.reader, "readinto"):
                    k = self.reader.readinto(view[got:n])
                    if k:
                        got += k
                        self.pos += k
                        continue
                    data = b""
                else:
                    data = self.reader.read(min(n - got, READ_PIECE))
                if not data:
                    raise formats.FormatError(
                        "the image is truncated: it ends at byte %d, inside its partitions" %
                        self.pos)
            if view is not None:
                view[got:got + len(data)] = data
            got += len(data)
            self.pos += len(data)
        return got


class Prefetcher(object):
    """Decompresses (and hashes) ahead in a thread into a few page-aligned buffers (bounded
    memory), so that inflating the next chunk overlaps writing the current one.  Chunks follow
    the segments in order, each at most one buffer long; :meth:`digest` gives each segment's
    sha256 of the stream."""

    def __init__(self, stream, segments, nbuf=3, size=blockdev.BUF):
        self.stream = stream
        self.bufs = [mmap.mmap(-1, size) for _ in range(nbuf)]
        self.views = [memoryview(b) for b in self.bufs]
        self.free = queue.Queue()
        for i in range(nbuf):
            self.free.put(i)
        self.out = queue.Queue()
        self.stopped = False
        self.chunks = []
        self.digests = {}
        self.ends = dict((seg.index, seg.end) for seg in segments)
        for seg in segments:
            pos = seg.start
            while pos < seg.end:
                n = min(size, seg.end - pos)
                self.chunks.append((seg.index, pos, n))
                pos += n
        self.thread = threading.Thread(target=self._run, name="migos-prefetch")
        self.thread.daemon = True
        self.thread.start()

    def _run(self):
        try:
            h, cur = None, None
            for si, pos, n in self.chunks:
                i = self.free.get()
                if i is None or self.stopped:
                    return
                self.stream.readinto(self.views[i], n)
                if si != cur:
                    h, cur = hashlib.sha256(), si
                h.update(self.views[i][:n])
                if pos + n == self.ends[si]:
                    self.digests[si] = h.hexdigest()
                self.out.put((si, pos, n, i))
            self.out.put(None)
        except BaseException as e:  # handed to the consumer
            self.out.put(e)

    def digest(self, seg):
        """sha256 of the segment's stream bytes (after all its chunks were consumed)."""
        return self.digests[seg.index]

    def segment(self, seg):
        """Yield (pos, view) for each chunk of ``seg``; a view is valid until the next one."""
        pos = seg.start
        while pos < seg.end:
            item = self.out.get()
            if isinstance(item, BaseException):
                raise item
            si, cpos, n, i = item
            assert si == seg.index and cpos == pos, "prefetch out of order"
            try:
                yield pos, self.views[i][:n]
            finally:
                self.free.put(i)
            pos += n

    def close(self):
        self.stopped = True
        self.free.put(None)
        self.thread.join(5)


class Verifier(object):
    """Reads written segments back (O_DIRECT) in a thread while the next one is written.
    Results come back in order; the journal counts a segment done only once it verified."""

    def __init__(self, dev):
        self.dev = dev
        self.buf = mmap.mmap(-1, blockdev.BUF)
        self.view = memoryview(self.buf)
        self.todo = queue.Queue()
        self.done = queue.Queue()
        self.pending = []
        self.thread = threading.Thread(target=self._run, name="migos-verify")
        self.thread.daemon = True
        self.thread.start()

    def _run(self):
        while True:
            item = self.todo.get()
            if item is None:
                return
            seg, target, want = item
            try:
                got = self.dev.hash_region(target, seg.size, view=self.view)
                self.done.put((seg, got == want, None))
            except BaseException as e:
                self.done.put((seg, False, e))

    def submit(self, seg, target, want):
        self.pending.append(seg)
        self.todo.put((seg, target, want))

    def results(self, block):
        """Yield verified segments in order (raise on a mismatch)."""
        while self.pending and (block or not self.done.empty()):
            seg, ok, err = self.done.get()
            assert seg is self.pending[0]
            self.pending.pop(0)
            if err is not None:
                raise err
            if not ok:
                raise MigrateFailed("verification failed: %s (segment %d) reads back "
                                    "differently from the image" % (seg.name, seg.index),
                                    "the SD card may be failing; run the same command again")
            yield seg

    def close(self):
        self.todo.put(None)
        self.thread.join(30)


# preflight helpers ---------------------------------------------------------------------------

def read_nm_files(paths):
    out = []
    names = set()
    for p in paths or []:
        name = os.path.basename(p)
        if not name or name.startswith(".") or name in names:
            raise UsageError("NetworkManager file %r has an unusable or duplicate name" % p,
                             "give each --nwmgr-cfg file a distinct plain name")
        try:
            with open(p, "rb") as f:
                data = f.read(1 << 20)
        except OSError as e:
            raise UsageError("cannot read NetworkManager file %s (%s)" % (p, e.strerror),
                             "check the --nwmgr-cfg path")
        for line in data.decode("utf-8", "replace").splitlines():
            k, _, v = line.partition("=")
            if k.strip().lower() in ("psk", "password", "wep-key0", "wep-key1", "wep-key2",
                                     "wep-key3", "private-key-password"):
                log.add_secret(v.strip())
        names.add(name)
        out.append((name, data))
    return out


def check_device_type(head, plan, cfg):
    """Buffer resin-boot until its label and device-type.json are readable; compare slugs."""
    base = plan.boot_start
    size = plan.boot_end - plan.boot_start

    def rd(off, n):
        if off < 0 or off + n > size:
            raise fatread.FatError("read outside resin-boot")
        if base + off + n > head.length:
            raise fatread.NeedMore(base + off + n)
        return head.read(base + off, n)

    while True:
        try:
            fat = fatread.Fat(rd)
            label = fat.volume_label()
            entry = fat.lookup("device-type.json")
            if entry is None:
                raise UsageError("the image's resin-boot has no device-type.json",
                                 "use a balenaOS image")
            raw = fat.read_file(entry)
            break
        except fatread.NeedMore as e:
            want = -(-e.end // HEAD_CHUNK) * HEAD_CHUNK
            if not head.fill_to(want) and head.length < e.end:
                raise UsageError("the image is truncated (it ends inside resin-boot)",
                                 "download the image again")
        except fatread.FatError as e:
            raise UsageError("the image's first partition is not a readable FAT (%s)" % e,
                             "use a balenaOS image")
    if label.strip().lower() not in BOOT_LABELS:
        raise UsageError("the image's first partition is labelled %r, not resin-boot" % label,
                         "use a balenaOS image")
    try:
        dt = json.loads(raw.decode("utf-8"))
        slug = dt["slug"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise UsageError("the image's device-type.json is unreadable", "use a balenaOS image")
    if slug != cfg.device_type:
        raise UsageError("the image is for device type %r but config.json is for %r" % (
            slug, cfg.device_type), "use a balenaOS image for %s" % cfg.device_type)
    return slug


def ext4_label(dev, offset):
    sb = dev.pread_direct(offset + 1024, 1024)
    if struct.unpack_from("<H", sb, 56)[0] != 0xef53:
        return None
    return sb[120:136].split(b"\0")[0].decode("utf-8", "replace")


def sha(data):
    return hashlib.sha256(data).hexdigest()


# the command ---------------------------------------------------------------------------------

class Migration(object):
    def __init__(self, args):
        self.args = args
        self.written = False       # True once this run wrote anything
        self.dev = None
        self.src = None
        self.machine = states.Machine(self._changed)
        self.t0 = time.monotonic()
        self.timings = {"verify_s": 0.0, "inject_s": 0.0, "write_phase_s": 0.0}

    def _changed(self, old, new):
        if old is not None and old != states.FAILED:
            log.event("OK", "state %s done" % old, state_name=old)
        log.event("INI", "state %s" % new, state_name=new)
        if os.environ.get("MIGOS_FAULT") == "hang:" + new:
            # fault injection for the watchdog test (migos.fault=hang:STATE on the kernel
            # command line): stop making progress, as a deadlocked migration would
            log.event("ERROR", "fault injection: hanging in state %s" % new, level="warn")
            while True:
                time.sleep(3600)

    # -- preflight ----------------------------------------------------------------------
    def load_config(self):
        a = self.args
        if a.config:
            cfg = configmod.load(a.config)
        else:
            cfg = self.config_from_old_boot()
        log.add_secret(cfg.data.get("apiKey"))
        log.add_secret(cfg.data.get("deviceApiKey"))
        return cfg

    def config_from_old_boot(self):
        start, end = layout.old_boot(self.dev.pread_direct(0, 512))

        def rd(off, n):
            if off + n > end - start:
                raise fatread.FatError("read outside p1")
            return self.dev.pread_direct(start + off, n)
        try:
            fat = fatread.Fat(rd)
            e = fat.lookup("config.json")
            text = fat.read_file(e).decode("utf-8") if e else None
        except (fatread.FatError, UnicodeDecodeError):
            text = None
        if text is None:
            raise UsageError("no config.json given and none on the boot partition",
                             "pass the fleet's config.json with -c")
        return configmod.parse(text, "config.json on the boot partition")

    def open_source(self, cfg):
        a = self.args
        if a.image:
            if a.version:
                raise UsageError("--image and --version exclude each other", "pass one of them")
            self.src = sources.open_url_or_file(a.image)
            self.image_name = self.src.describe()
        else:
            version, self.src = sources.api_image(cfg, a.version)
            self.image_name = "balenaOS %s %s" % (cfg.device_type, version)

    def preflight(self):
        a = self.args
        self.machine.go(states.PREFLIGHT)
        if a.hostname and not HOSTNAME_RE.match(a.hostname):
            raise UsageError("hostname %r is not a valid host name" % a.hostname,
                             "use letters, digits and '-', at most 63 characters")
        self.nm_files = read_nm_files(a.nwmgr_cfg)
        self.dev = blockdev.Device(a.device)
        self.cfg = self.load_config()
        self.old_mbr = self.dev.pread_direct(0, 512)
        # a switched disk: the journal says so and the MBR is the one we wrote
        self.found = self.find_journal()
        self.open_source(self.cfg)
        self.stage_in_ram()
        self.format, self.reader, self.counted = formats.open_image(self.src)
        log.info("image %s (%s)" % (self.image_name, self.format), image=self.image_name,
                 format=self.format)
        self.head = Head(self.reader)
        self.head.fill_to(HEAD_CHUNK)
        if self.head.length < 512:
            raise UsageError("the image is empty or truncated", "download the image again")
        image_mbr = self.head.read(0, 512)
        if self.already_switched():
            return
        try:
            self.plan = layout.plan(self.dev.size, self.old_mbr, image_mbr)
        except layout.LayoutError as e:
            raise UsageError(e.problem, e.fix)
        if isinstance(self.src, sources.FileSource):
            formats.precheck_file(self.src.path, self.format, self.plan.copy_end)
        elif getattr(self.src, "total", None) is not None and self.format == formats.RAW and \
                self.src.total < self.plan.copy_end:
            raise UsageError("the image is truncated: the server offers %d bytes, its partitions "
                             "need %d" % (self.src.total, self.plan.copy_end), "fix the image URL")
        check_device_type(self.head, self.plan, self.cfg)
        if self.looks_balena(self.old_mbr) and self.found is None:
            raise UsageError("the device already holds a balenaOS partition layout",
                             "nothing to migrate")
        self.verify_first()

    def stage_in_ram(self):
        """Download an http(s) image whole into RAM when it fits (see sources.ram_budget): the
        rest of the migration no longer depends on the network, and verify_first reads it
        from RAM instead of downloading it twice."""
        total = getattr(self.src, "total", None)
        if not isinstance(self.src, sources.HttpSource) or not total:
            return
        budget = sources.ram_budget()
        if total > budget:
            log.event("OK", "image %d MiB does not fit the RAM budget of %d MiB: streaming it "
                      "(downloaded twice: once to verify, once to write)" % (
                          total // MIB, budget // MIB), staged=False)
            return
        t = time.monotonic()
        prog = Progress(total, "download to RAM")
        self.src = sources.stage_in_ram(self.src, prog.add)
        self.timings["download_s"] = time.monotonic() - t
        log.event("OK", "image downloaded to RAM: %d MiB in %.1fs" % (
            total // MIB, self.timings["download_s"]), staged=True, bytes=total)

    def verify_first(self):
        """Decompress the whole image once, before the first write, and check it ends cleanly
        (gzip/zip CRC, xz check, zstd checksum) and covers every partition: a corrupt or
        truncated image is refused while the old OS can still be given back (exit 2).
        Skipped on a disk that a run already wrote to: there is no way back anyway, and the
        write pass checks the same things as it goes."""
        if self.found is not None or self.args.no_verify_first:
            return
        t = time.monotonic()
        src = self.src.reopen()
        try:
            fmt, reader, _ = formats.open_image(src)
            prog = Progress(getattr(src, "total", None) or getattr(src, "size", 0) or 1,
                            "verify image")
            length = 0
            last = 0
            while True:
                data = reader.read(4 * MIB)
                if not data:
                    break
                length += len(data)
                prog.add(src.sent - last)
                last = src.sent
            reader.finish()
        except formats.FormatError as e:
            raise UsageError("the image is corrupt: %s" % e,
                             "fix the image at its source; nothing was written")
        finally:
            src.close()
        if length < self.plan.copy_end:
            raise UsageError("the image is truncated: %d bytes, its partitions need %d" % (
                length, self.plan.copy_end), "fix the image at its source; nothing was written")
        self.timings["verify_first_s"] = time.monotonic() - t
        log.event("OK", "image verified before writing: %d MiB (%s) in %.1fs" % (
            length // MIB, fmt, self.timings["verify_first_s"]), image_bytes=length)

    def looks_balena(self, sector):
        try:
            layout.ImageTable(sector)
        except layout.LayoutError:
            return False
        start, end = layout.old_boot(sector)
        try:
            fat = fatread.Fat(lambda o, n: self.dev.pread_direct(start + o, n))
            return fat.volume_label().lower() in BOOT_LABELS
        except fatread.FatError:
            return False

    def find_journal(self):
        best = None
        for base in layout.journal_candidates(self.old_mbr):
            rec = journal.read(self.dev, base)
            if rec is not None and (best is None or rec[0] > best[1][0]):
                best = (base, rec)
        return best

    def already_switched(self):
        if self.found is None:
            return False
        base, (seq, payload) = self.found
        if payload.get("new_mbr") != sha(self.old_mbr):
            return False
        if payload.get("device", {}).get("size") != self.dev.size:
            return False
        self.switched_payload = payload
        return True

    # -- plan ---------------------------------------------------------------------------
    def plan_state(self):
        self.machine.go(states.PLAN)
        if getattr(self, "switched_payload", None) is not None:
            # the image id is computed from the same head length as the original run
            want = self.switched_payload.get("image", "")
            try:
                n = int(want.rsplit("/", 1)[1])
            except (IndexError, ValueError):
                n = 0
            if n and self.head.length < n:
                self.head.fill_to(n)
            if self.head.image_id() != want:
                raise UsageError("the device was already migrated with another image",
                                 "nothing to do")
            return states.ALREADY_DONE, 0
        p = self.plan
        self.image_id = self.head.image_id()
        payload, prev_seq, base = None, 0, p.journal
        if self.found is not None:
            fbase, (prev_seq, payload) = self.found
            if fbase != p.journal:
                payload = None
        if self.args.discard_journal and payload is not None:
            log.event("ERROR", "discarding the journal found on the disk", level="warn")
            payload = None
        try:
            decision, done = states.decide(payload, self.dev.size, sha(self.old_mbr),
                                           self.image_id, len(p.segments))
        except states.Mismatch as e:
            err = UsageError(str(e), "run migrate with the image and device of the interrupted "
                             "migration, or add --discard-journal to start over")
            err.journal_mismatch = True
            raise err
        self.journal = journal.Journal(self.dev, base, prev_seq, payload if decision ==
                                       states.RESUME else None)
        log.info("layout: old p1 %d..%d MiB, journal at %d MiB, resin-boot at %d MiB, image "
                 "%d MiB, disk %d MiB" % (p.old_p1[0] // MIB, p.old_p1[1] // MIB, p.journal // MIB,
                                          p.new_boot_start // MIB,
                                          (p.copy_end - p.copy_start) // MIB, p.disk_bytes // MIB),
                 plan=p.to_dict(), decision=decision, done=done)
        return decision, done

    # -- write --------------------------------------------------------------------------
    def base_payload(self):
        p = self.plan
        return {"device": {"size": self.dev.size, "mbr": sha(self.old_mbr)},
                "image": self.image_id, "image_name": self.image_name,
                "segments": len(p.segments), "shift": p.shift, "new_mbr": sha(p.new_mbr)}

    def write_all(self, done):
        """Write the segments; on resume, segments the journal calls done are compared with the
        stream chunk by chunk (O_DIRECT reads) and rewritten where they differ, so a resumed run
        never trusts the disk blindly (e.g. after a run that was fed a corrupt stream)."""
        p = self.plan
        if done == 0:
            self.journal.payload = {}
            self.journal.commit(state=states.WRITE, done=0, boot_stream=None, boot_final=None,
                                **self.base_payload())
            self.written = True
        stream = Stream(self.head, self.reader)
        stream.skip_to(p.copy_start)
        prog = Progress(p.copy_end - p.copy_start, "write")
        pf = Prefetcher(stream, p.segments)
        ver = Verifier(self.dev)
        self.verified = done
        self.last_commit = time.monotonic()
        try:
            for seg in p.segments:
                if seg.index == 0 and done >= 1:
                    h = self.hash_stream(pf, seg, prog)
                    if h != self.journal.payload.get("boot_stream"):
                        raise MigrateFailed("the image's resin-boot differs from the one written "
                                            "by the interrupted run",
                                            "run the same command with --discard-journal")
                    continue
                if seg.index < done:
                    self.sync_segment(pf, seg, prog)
                    continue
                if self.machine.state != states.WRITE:
                    self.machine.go(states.WRITE)
                target = self.plan.target(seg.start)
                h = self.write_segment(pf, seg, prog)
                if seg.index == 0:
                    # resin-boot: verified right away, then injected, then verified again
                    self.verify_now(seg, target, h)
                    self.machine.go(states.INJECT)
                    final = self.inject_boot()
                    self.journal.commit(state=states.WRITE, done=1, boot_stream=h,
                                        boot_final=final)
                    continue
                ver.submit(seg, target, h)
                self.commit_verified(ver, block=False)
            self.commit_verified(ver, block=True)
        finally:
            pf.close()
            ver.close()
        prog.report()
        return stream

    # at most one journal record per second on fast media (fewer flushes); the test-suite sets
    # MIGOS_JOURNAL_INTERVAL=0 to record every verified segment
    try:
        COMMIT_INTERVAL = float(os.environ.get("MIGOS_JOURNAL_INTERVAL", "1"))
    except ValueError:
        COMMIT_INTERVAL = 1.0

    def commit_verified(self, ver, block):
        """Record verified segments in the journal: data flushed first, then the record.
        On fast media the journal is written at most once a second (fewer flushes); the
        last verified segment is always recorded when ``block``."""
        t = time.monotonic()
        last = None
        for seg in ver.results(block):
            last = seg
            log.debug("segment %d %s verified" % (seg.index, seg.name), segment=seg.index)
        if last is not None:
            self.verified = last.index + 1
        if self.verified > self.journal.payload.get("done", 0) and (
                block or time.monotonic() - self.last_commit >= self.COMMIT_INTERVAL):
            self.dev.sync()
            self.journal.commit(state=states.WRITE, done=self.verified)
            self.last_commit = time.monotonic()
        if block:
            self.timings["verify_s"] += time.monotonic() - t

    def verify_now(self, seg, target, want):
        t = time.monotonic()
        got = self.dev.hash_region(target, seg.size)
        self.timings["verify_s"] += time.monotonic() - t
        if got != want:
            raise MigrateFailed("verification failed: %s (segment %d at %d MiB) reads back "
                                "differently from the image" % (seg.name, seg.index, target // MIB),
                                "the SD card may be failing; run the same command again")

    def hash_stream(self, pf, seg, prog):
        for _pos, view in pf.segment(seg):
            prog.add(len(view))
        return pf.digest(seg)

    def sync_segment(self, pf, seg, prog):
        """A segment done by an earlier run: compare with the stream, rewrite what differs."""
        dev = self.dev
        target = self.plan.target(seg.start)
        rewritten = 0
        for pos, view in pf.segment(seg):
            n = len(view)
            off = target + (pos - seg.start)
            if dev.pread_direct(off, n) != bytes(view):
                dev.write_view(off, view)
                self.written = True
                rewritten += n
            prog.add(n)
        if rewritten:
            dev.sync()
            log.event("ERROR", "segment %d (%s): %d MiB on the disk differed from the image and "
                      "were rewritten" % (seg.index, seg.name, rewritten // MIB), level="warn")
            self.verify_now(seg, target, pf.digest(seg))

    def write_segment(self, pf, seg, prog):
        """Stream one segment to its place; flushed; returns the stream's sha256 of it."""
        dev = self.dev
        target = self.plan.target(seg.start)
        for pos, view in pf.segment(seg):
            dev.write_view(target + (pos - seg.start), view)
            self.written = True
            prog.add(len(view))
        return pf.digest(seg)

    def boot_fat(self):
        start = self.plan.new_boot_start
        size = self.plan.boot_end - self.plan.boot_start

        def rd(off, n):
            if off + n > size:
                raise fatread.FatError("read outside resin-boot")
            return self.dev.pread_direct(start + off, n)
        return fatread.Fat(rd)

    def inject_boot(self):
        t = time.monotonic()
        try:
            return self._inject_boot()
        finally:
            self.timings["inject_s"] += time.monotonic() - t

    def _inject_boot(self):
        p = self.plan
        files = inject.files_to_inject(self.cfg.to_json(self.args.hostname), self.nm_files)
        inject.inject(self.dev.path, p.new_boot_start, files, self.boot_fat())
        self.dev.sync()
        inject.verify(self.boot_fat(), files)
        final = self.dev.hash_region(p.new_boot_start, p.boot_end - p.boot_start)
        log.info("resin-boot: injected %s; read back and verified" % ", ".join(sorted(files)),
                 files=sorted(files))
        return final

    # -- after the stream -----------------------------------------------------------------
    def drain(self):
        self.machine.go(states.DRAIN)
        self.reader.finish()
        log.info("image stream complete and intact (%d compressed bytes read)" %
                 self.counted.count)

    def check(self):
        self.machine.go(states.CHECK)
        p = self.plan
        dev = self.dev
        boot_final = self.journal.payload.get("boot_final")
        got = dev.hash_region(p.new_boot_start, p.boot_end - p.boot_start)
        if not boot_final or got != boot_final:
            raise MigrateFailed("the new resin-boot changed since it was verified",
                                "run the same command again with --discard-journal")
        new = mbr.primaries(p.new_mbr)
        labels = {}
        for e in new[1:3]:
            labels[e.index] = ext4_label(dev, e.start * mbr.SECTOR)
        ext = new[3]
        try:
            logicals = mbr.logical_chain(lambda lba: dev.pread_direct(lba * mbr.SECTOR, 512),
                                         ext.start, ext.count)
        except mbr.MbrError as e:
            raise MigrateFailed("the written extended partition is unusable (%s)" % e,
                                "use an unmodified balenaOS image")
        if len(logicals) != 2:
            raise MigrateFailed("the image has %d logical partitions, balenaOS has 2 (state, data)"
                                % len(logicals), "use an unmodified balenaOS image")
        for _ebr, e in logicals:
            labels[e.index] = ext4_label(dev, e.start * mbr.SECTOR)
        for idx, want in sorted(EXT4_LABELS.items()):
            if labels.get(idx) not in want:
                raise MigrateFailed("partition %d of the image is labelled %r, not %s" % (
                    idx, labels.get(idx), want[0]), "use an unmodified balenaOS image")
        log.info("new layout checked: resin-boot verified, partitions %s" % ", ".join(
            "p%d=%s" % kv for kv in sorted(labels.items())))

    def switch(self):
        self.machine.go(states.SWITCH)
        p = self.plan
        self.journal.commit(state=states.SWITCH)
        log.event("INI", "switching the MBR: p1 now at %d MiB (resin-boot)" %
                  (p.new_boot_start // MIB))
        self.dev.write_sector0(p.new_mbr)
        if self.dev.pread_direct(0, 512) != p.new_mbr:
            raise MigrateFailed("the MBR does not read back as written",
                                "run the same command again")
        self.journal.commit(state=states.DONE)
        self.reread_partitions()
        self.machine.go(states.DONE)

    def reread_partitions(self):
        if not self.dev.is_block:
            return
        import fcntl
        self.dev.flush_buffers()
        try:
            fcntl.ioctl(self.dev.fd, 0x125f)  # BLKRRPART
        except OSError:
            pass

    def run(self):
        try:
            self.preflight()
            decision, done = self.plan_state()
            if decision == states.ALREADY_DONE:
                self.machine.go(states.DONE)
                log.event("SUCCESS", "the device already boots balenaOS from this image")
                return 0
            t = time.monotonic()
            self.write_all(done)
            self.timings["write_phase_s"] = time.monotonic() - t - self.timings["verify_s"] - \
                self.timings["inject_s"]
            self.drain()
            self.check()
            self.switch()
            total = time.monotonic() - self.t0
            log.event("SUCCESS", "migration complete in %.1fs: the device boots balenaOS on its "
                      "next start" % total, timings=dict(
                          (k, round(v, 3)) for k, v in dict(self.timings, total_s=total).items()))
            return 0
        except Exception as e:
            self.fail(e)
            raise self.as_error(e)
        finally:
            if self.src is not None and hasattr(self.src, "close"):
                try:
                    self.src.close()
                except Exception:
                    pass
            if self.dev is not None:
                self.dev.close()

    def as_error(self, e):
        if isinstance(e, (formats.FormatError, fatread.FatError, layout.LayoutError)):
            e = (MigrateFailed if self.written else UsageError)(
                str(e), "use an intact balenaOS image" + (
                    " and run migrate again: it resumes (the old boot partition still boots "
                    "MIGOS)" if self.written else ""))
        elif not isinstance(e, MigosError):
            return e
        touched = self.written or getattr(self, "found", None) is not None
        if touched and e.exit_code in (2, 3) and not getattr(e, "journal_mismatch", False):
            # an earlier run wrote to this disk (its journal is there): the old OS's root may be
            # gone, so this is never "nothing changed"; the only way is forward
            return MigrateFailed(e.problem, (e.fix + "; " if e.fix else "") +
                                 "the old boot partition still boots MIGOS: run the same command "
                                 "again to resume")
        return e

    def fail(self, e):
        if self.machine.state not in (None, states.DONE, states.FAILED):
            try:
                self.machine.go(states.FAILED)
            except states.TransitionError:
                pass
        msg = e.line() if isinstance(e, MigosError) else "%s: %s" % (type(e).__name__, e)
        log.event("FAIL", "migrate failed: %s" % msg, level="error", written=self.written)


def main(args):
    return Migration(args).run()
