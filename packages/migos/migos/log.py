"""Structured JSON event log (DESIGN.md section 4).

Every event is one JSON object on one line with at least::

    device, script, function, line, uptime, state, msg, ts

``state`` is one of STATES. Sinks: the console (stderr), a file (``--log-to`` /
``--log-file``), an HTTP endpoint, and an in-memory ring kept for writing the full
stage-2 log at the end. Secrets never reach a sink: values of secret keys and every
string registered with :func:`add_secret` are replaced by ``<redacted>``.
"""

import datetime
import inspect
import json
import os
import sys
import threading
import time

STATES = ("INI", "END", "OK", "ERROR", "FAIL", "SUCCESS", "CMDLOG")
LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}
SECRET_KEYS = ("apikey", "deviceapikey", "psk", "password", "passphrase", "token", "secret")
REDACTED = "<redacted>"

_secrets = set()
_lock = threading.Lock()


def add_secret(value):
    """Never print ``value`` (a wifi passphrase, an API key) in any log line."""
    if value and isinstance(value, str) and len(value) >= 4:
        _secrets.add(value)


def redact(obj):
    """Return ``obj`` with secret keys' values and registered secrets replaced."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            key = str(k).lower().replace("_", "").replace("-", "")
            if any(s in key for s in SECRET_KEYS) and v not in (None, ""):
                out[k] = REDACTED
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        for s in _secrets:
            if s in obj:
                obj = obj.replace(s, REDACTED)
        return obj
    return obj


def uptime():
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return round(time.monotonic(), 2)


def device_id():
    for path in ("/proc/device-tree/serial-number", "/etc/machine-id"):
        try:
            with open(path) as f:
                value = f.read().strip("\x00\n ")
            if value:
                return value
        except OSError:
            pass
    return os.uname().nodename


class Logger:
    """Writes events to every configured sink. One instance per process: :data:`LOG`."""

    def __init__(self):
        self.device = device_id()
        self.script = "migos"
        self.level = LEVELS["info"]
        self.console = sys.stderr
        self.console_json = True
        self.files = []          # open text files
        self.http = None         # callable(event dict) or None
        self.memory = []         # every event, for the full-log upload at the end
        self.memory_limit = 200000

    def configure(self, level=None, log_file=None, console_json=None, script=None):
        if level:
            self.level = LEVELS[level]
        if console_json is not None:
            self.console_json = console_json
        if script:
            self.script = script
        if log_file:
            self.files.append(open(log_file, "a", buffering=1))

    def event(self, state, msg, level="info", depth=1, **fields):
        if state not in STATES:
            raise ValueError("unknown log state %r" % state)
        frame = inspect.stack()[depth]
        ev = {
            "device": self.device,
            "script": os.path.basename(frame.filename),
            "function": frame.function,
            "line": frame.lineno,
            "uptime": round(uptime(), 2),
            "state": state,
            "msg": msg,
            "ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        }
        ev.update(fields)
        ev = redact(ev)
        line = json.dumps(ev, sort_keys=False, default=str)
        with _lock:
            if len(self.memory) < self.memory_limit:
                self.memory.append(line)
            if LEVELS[level] >= self.level and self.console is not None:
                if self.console_json:
                    self.console.write(line + "\n")
                else:
                    self.console.write("%s %s\n" % (state, ev["msg"]))
                self.console.flush()
            for f in self.files:
                f.write(line + "\n")
            if self.http is not None:
                try:
                    self.http(ev)
                except Exception:  # a remote sink never stops the migration
                    pass
        return ev

    def raw(self, line):
        """One already formatted line (an event of a child process): to the console, the
        files and the memory, never to the HTTP sink (the child ships its own)."""
        line = line.rstrip("\n")
        with _lock:
            if len(self.memory) < self.memory_limit:
                self.memory.append(line)
            if self.console is not None:
                self.console.write(line + "\n")
                self.console.flush()
            for f in self.files:
                f.write(line + "\n")

    def add_file(self, f, backlog=True):
        """Add an open text file as a sink; with ``backlog`` the events so far go first."""
        with _lock:
            if backlog:
                f.write("".join(l + "\n" for l in self.memory))
            self.files.append(f)


LOG = Logger()


def event(state, msg, level="info", **fields):
    """Log one event from the caller's frame."""
    return LOG.event(state, msg, level=level, depth=2, **fields)


def info(msg, **fields):
    return LOG.event("OK", msg, level="info", depth=2, **fields)


def debug(msg, **fields):
    return LOG.event("CMDLOG", msg, level="debug", depth=2, **fields)
