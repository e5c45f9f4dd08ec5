"""Remote logs: ship the JSON events (DESIGN.md 4) to MQTT and/or HTTP, never losing them.

    shipper = Shipper(spool_dir, [MqttTransport(conn, topic), HttpTransport(url)])
    shipper.start(); shipper.install()      # every log event now also goes to the spool
    ...
    shipper.stop()                          # flushes what it can, keeps the rest on disk
    upload_full_log(log.LOG.memory, http_url=..., mqtt=(conn, topic))   # at the end

The spool is a directory of append-only segment files (``seg-NNNNNNNNNNNN.jsonl``, one
event per line) and ``cursor.json`` (segment and byte offset of the first unsent line,
replaced atomically after every acknowledged batch). Events are appended as they happen
and fsync'd before each send attempt and at stop, so a crash or reboot loses at most
the events of the last fraction of a second; on start the shipper resumes from the
cursor. Delivery is at-least-once: a crash between a send and the cursor update sends
that batch again; every event carries ``qid`` (segment:offset) so receivers can drop
duplicates. The spool is bounded (``max_bytes``): when full, the oldest unsent segment
is dropped and the next batch starts with an event saying how many were dropped.

Batches: up to ``batch`` events, sent when that many are waiting or every ``interval``
seconds. A failed send is retried with exponential backoff (up to ``max_backoff`` s),
for ever; transports are tried in order and a batch counts as sent when every transport
took it (each transport acknowledges: MQTT PUBACK, HTTP 2xx).
"""

import json
import os
import threading
import time
import urllib.request

from .. import log

SEGMENT_BYTES = 64 * 1024


class MqttTransport:
    def __init__(self, conn, topic_name, timeout=5.0):
        self.conn, self.topic, self.timeout = conn, topic_name, timeout

    def send(self, events):
        if not self.conn.connected.is_set():
            raise IOError("MQTT broker not connected")
        payload = json.dumps({"type": "log", "events": events}, separators=(",", ":"))
        self.conn.publish(self.topic, payload, timeout=self.timeout)


class HttpTransport:
    """POST a JSON array of events to ``url`` (http or https); 2xx means stored."""

    def __init__(self, url, timeout=10.0, headers=None):
        if not url.startswith(("http://", "https://")):
            raise ValueError("log endpoint %r is not an http(s) URL" % url)
        self.url, self.timeout, self.headers = url, timeout, dict(headers or {})

    def send(self, events):
        body = json.dumps(events, separators=(",", ":")).encode()
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers=dict(self.headers, **{"Content-Type": "application/json"}))
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            if not 200 <= resp.status < 300:
                raise IOError("log endpoint answered %d" % resp.status)


class Spool:
    """The on-disk queue (no threads; the Shipper serialises access)."""

    def __init__(self, path, max_bytes=4 * 1024 * 1024):
        self.path = path
        self.max_bytes = max_bytes
        os.makedirs(path, exist_ok=True)
        self.dropped = 0
        self.cursor = self._read_cursor()
        segs = self.segments()
        self.current = segs[-1] if segs else max(self.cursor[0], 1)
        self._fh = None
        if segs:
            self._drop_torn_tail(self.seg_path(self.current))

    @staticmethod
    def _drop_torn_tail(path):
        """A crash mid-append leaves a line without its newline: cut it off."""
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    # -- layout
    def seg_path(self, n):
        return os.path.join(self.path, "seg-%012d.jsonl" % n)

    def segments(self):
        out = []
        for name in os.listdir(self.path):
            if name.startswith("seg-") and name.endswith(".jsonl"):
                try:
                    out.append(int(name[4:-6]))
                except ValueError:
                    pass
        return sorted(out)

    def _read_cursor(self):
        try:
            with open(os.path.join(self.path, "cursor.json")) as f:
                c = json.load(f)
            return [int(c["segment"]), int(c["offset"])]
        except (OSError, ValueError, KeyError, TypeError):
            return [0, 0]

    def _write_cursor(self):
        tmp = os.path.join(self.path, "cursor.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"segment": self.cursor[0], "offset": self.cursor[1]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.path, "cursor.json"))

    # -- writing
    def append(self, ev):
        if self._fh is None or self._fh.tell() >= SEGMENT_BYTES:
            if self._fh is not None:
                self._fh.close()
                self.current += 1
            self._fh = open(self.seg_path(self.current), "ab")
        ev = dict(ev, qid="%d:%d" % (self.current, self._fh.tell()))
        self._fh.write(json.dumps(ev, separators=(",", ":"), default=str).encode() + b"\n")
        self._fh.flush()
        self._bound()

    def sync(self):
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def close(self):
        if self._fh is not None:
            self.sync()
            self._fh.close()
            self._fh = None

    def size(self):
        return sum(os.path.getsize(self.seg_path(n)) for n in self.segments())

    def _bound(self):
        while self.size() > self.max_bytes:
            segs = self.segments()
            if len(segs) <= 1:
                break
            oldest = segs[0]
            with open(self.seg_path(oldest), "rb") as f:
                if oldest == self.cursor[0]:
                    f.seek(self.cursor[1])
                self.dropped += sum(1 for line in f if line.endswith(b"\n"))
            os.unlink(self.seg_path(oldest))
            self.cursor = [segs[1], 0]
            self._write_cursor()

    # -- reading
    def peek(self, limit):
        """Up to ``limit`` unsent events and the cursor after them."""
        seg, off = self.cursor
        segs = [n for n in self.segments() if n >= seg]
        events = []
        for n in segs:
            start = off if n == seg else 0
            with open(self.seg_path(n), "rb") as f:
                f.seek(start)
                pos = start
                for line in f:
                    if not line.endswith(b"\n") or len(events) >= limit:
                        break
                    pos += len(line)
                    try:
                        events.append(json.loads(line.decode()))
                    except ValueError:
                        pass     # a torn line after a crash: skipped
            end = (n, pos)
            if len(events) >= limit:
                return events, list(end)
            if n != self.current and pos >= os.path.getsize(self.seg_path(n)):
                continue
            return events, list(end)
        return events, [max(seg, self.current), off if not segs else 0]

    def commit(self, new_cursor):
        """Mark everything before ``new_cursor`` sent; remove fully sent segments."""
        self.cursor = list(new_cursor)
        self._write_cursor()
        for n in self.segments():
            if n < self.cursor[0]:
                os.unlink(self.seg_path(n))


class Shipper:
    def __init__(self, spool_dir, transports, batch=100, interval=1.0, max_bytes=4 * 1024 * 1024,
                 max_backoff=30.0):
        self.spool = Spool(spool_dir, max_bytes)
        self.transports = list(transports)
        self.batch, self.interval, self.max_backoff = batch, interval, max_backoff
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self.sent = 0
        self.failures = 0
        self.last_error = None

    def enqueue(self, ev):
        with self._lock:
            self.spool.append(ev)
        self._wake.set()

    def install(self):
        """Make every event of ``migos.log`` go to this shipper too."""
        log.LOG.http = self.enqueue

    def pending(self):
        with self._lock:
            return len(self.spool.peek(10 ** 9)[0])

    def flush_once(self):
        """One send attempt; True if something was sent or nothing was pending."""
        with self._lock:
            self.spool.sync()
            events, cur = self.spool.peek(self.batch)
            dropped = self.spool.dropped
        if dropped:
            events = [{"state": "ERROR", "msg": "log spool full: %d events dropped" % dropped,
                       "device": log.LOG.device, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                     time.gmtime())}] + events
        if not events:
            return True
        try:
            for t in self.transports:
                t.send(events)
        except Exception as e:   # network, broker, HTTP: retried later
            self.failures += 1
            self.last_error = str(e)
            return False
        with self._lock:
            self.spool.commit(cur)
            self.spool.dropped -= dropped
        self.sent += len(events)
        return True

    def _run(self):
        backoff = self.interval
        while not self._stop.is_set():
            ok = self.flush_once()
            if ok:
                backoff = self.interval
                with self._lock:
                    more = bool(self.spool.peek(1)[0])
                if more:
                    continue
                self._wake.wait(self.interval)
                self._wake.clear()
            else:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def start(self):
        self._thread = threading.Thread(target=self._run, name="migos-logship", daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_timeout=2.0):
        """Try to send what is pending for up to ``drain_timeout`` s (until a send fails),
        then keep the rest on disk."""
        deadline = time.monotonic() + drain_timeout
        failures = self.failures
        while time.monotonic() < deadline and self.failures == failures:   # unreachable: stop
            with self._lock:
                if not self.spool.peek(1)[0]:
                    break
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(5)
        with self._lock:
            self.spool.close()
        if log.LOG.http == self.enqueue:
            log.LOG.http = None


def from_env(environ=None):
    """A started Shipper to ``$MIGOS_LOG_HTTP`` (spool ``$MIGOS_LOG_SPOOL``, default
    /var/lib/migos/logspool), installed as the log's HTTP sink; None when not configured.
    ``migos.cli`` calls this for every command, so stage 1 and stage 2 ship their events
    whenever the variable is set."""
    environ = os.environ if environ is None else environ
    url = environ.get("MIGOS_LOG_HTTP")
    if not url:
        return None
    spool = environ.get("MIGOS_LOG_SPOOL", "/var/lib/migos/logspool")
    sh = Shipper(spool, [HttpTransport(url)]).start()
    sh.install()
    return sh


def upload_full_log(lines, http_url=None, mqtt=None, retries=5, delay=2.0, chunk=256 * 1024):
    """Upload the whole log (e.g. ``log.LOG.memory`` at the end of stage 2).

    ``http_url``: one POST of the NDJSON text; ``mqtt``: ``(connection, topic)``, the
    text in numbered parts. Returns True when every destination acknowledged it."""
    text = "".join(l if l.endswith("\n") else l + "\n" for l in lines)
    ok = True
    for attempt in range(retries):
        try:
            if http_url:
                req = urllib.request.Request(http_url, data=text.encode(), method="POST",
                                             headers={"Content-Type": "application/x-ndjson"})
                with urllib.request.urlopen(req, timeout=30) as resp:
                    if not 200 <= resp.status < 300:
                        raise IOError("full-log endpoint answered %d" % resp.status)
            if mqtt:
                conn, topic_name = mqtt
                parts = [text[i:i + chunk] for i in range(0, len(text), chunk)] or [""]
                for i, part in enumerate(parts):
                    conn.publish(topic_name, json.dumps({"type": "fulllog", "part": i,
                                                         "parts": len(parts), "data": part}),
                                 timeout=10)
            return True
        except Exception:   # retried; the caller decides what a failed upload means
            ok = False
            time.sleep(delay * (attempt + 1))
    return ok
