"""Signed command envelopes: HMAC-SHA256 with per-device keys, expiry, nonce (stdlib only).

Choice: HMAC-SHA256, not Ed25519, because the device must verify with the standard
library of Python 3.7 and HMAC is constant-time there (``hmac.compare_digest``).

Keys. The operator holds one random 32-byte *fleet key*. Each device is provisioned (at
install, e.g. written to ``/etc/migos/agent.key`` mode 0600) only with its *device key*
``HMAC-SHA256(fleet_key, "migos-device-key:" + device_id)``; the operator derives it on
the fly. The device never holds the fleet key.

Threat model. The broker and the network are untrusted for integrity: anyone who can
publish on a device's command topic (a compromised broker account, a man in the middle
when TLS is off) can only get commands refused. A command is accepted only if

* its HMAC over the canonical JSON of every other field verifies with this device's key,
* ``device`` names this device (a command signed for one device cannot be replayed on
  another even if both keys leaked to the same party),
* ``cmd`` is on the allow-list and its arguments parse as that command's options,
* ``issued <= now + skew`` and ``now <= expires`` and ``expires - issued <= MAX_LIFETIME``,
* its ``nonce`` was not seen before; seen nonces are kept on disk (fsync'd before the
  command runs) until they expire, so a replay after an agent restart is refused too.

Not covered: a stolen device key lets its holder command *that* device (rotate by
re-provisioning); a stolen fleet key compromises the fleet; confidentiality of commands
relies on TLS; a device with a wrong clock refuses valid commands (they are refused as
expired/not yet valid, and the refusal is logged and published).
"""

import hashlib
import hmac
import json
import os
import time

ALLOWED = ("diagnostic", "backup", "init", "takeover", "restore-boot", "status")
MAX_LIFETIME = 24 * 3600      # seconds a command may stay valid
CLOCK_SKEW = 300              # seconds a command may be issued "in the future"
FIELDS = ("v", "id", "device", "cmd", "args", "nonce", "issued", "expires")


class Refused(Exception):
    """A command the agent will not run; ``reason`` is a short machine word."""

    def __init__(self, reason, detail):
        Exception.__init__(self, "%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


def new_fleet_key():
    return os.urandom(32).hex()


def load_key(path):
    """A key file holds 64 hex digits (32 bytes)."""
    with open(path) as f:
        text = f.read().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ValueError("%s does not hold a hex key of at least 16 bytes" % path)
    return key


def device_key(fleet_key, device):
    return hmac.new(fleet_key, b"migos-device-key:" + device.encode(), hashlib.sha256).digest()


def canonical(env):
    body = {k: env[k] for k in FIELDS if k in env}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(key, env):
    out = dict(env)
    out["sig"] = hmac.new(key, canonical(env), hashlib.sha256).hexdigest()
    return out


def make_command(fleet_key, device, cmd, args=(), lifetime=600, now=None):
    """A signed envelope for ``device`` (operator side)."""
    now = time.time() if now is None else now
    env = {"v": 1, "id": os.urandom(8).hex(), "device": device, "cmd": cmd,
           "args": list(args), "nonce": os.urandom(16).hex(), "issued": round(now, 3),
           "expires": round(now + lifetime, 3)}
    return sign(device_key(fleet_key, device), env)


def check(key, device, env, now=None):
    """Verify ``env`` for this device (pure; the nonce store is checked separately)."""
    now = time.time() if now is None else now
    if not isinstance(env, dict):
        raise Refused("malformed", "not a JSON object")
    if "sig" not in env or not isinstance(env["sig"], str):
        raise Refused("unsigned", "no signature")
    missing = [k for k in FIELDS if k not in env]
    if missing:
        raise Refused("malformed", "missing " + ", ".join(missing))
    expected = hmac.new(key, canonical(env), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, env["sig"]):
        raise Refused("bad-signature", "signature does not verify")
    if env["v"] != 1:
        raise Refused("malformed", "unknown envelope version %r" % env["v"])
    if env["device"] != device:
        raise Refused("wrong-device", "signed for %r" % env["device"])
    if env["cmd"] not in ALLOWED:
        raise Refused("unknown-command", "%r is not allowed" % env["cmd"])
    if not isinstance(env["args"], list) or not all(isinstance(a, str) for a in env["args"]):
        raise Refused("malformed", "args must be a list of strings")
    try:
        issued, expires = float(env["issued"]), float(env["expires"])
    except (TypeError, ValueError):
        raise Refused("malformed", "issued/expires are not numbers")
    if issued > now + CLOCK_SKEW:
        raise Refused("not-yet-valid", "issued %.0f s in the future" % (issued - now))
    if now > expires:
        raise Refused("expired", "expired %.0f s ago" % (now - expires))
    if expires - issued > MAX_LIFETIME:
        raise Refused("malformed", "lifetime over %d s" % MAX_LIFETIME)
    if not isinstance(env["nonce"], str) or not 16 <= len(env["nonce"]) <= 128:
        raise Refused("malformed", "bad nonce")
    return env


class NonceStore:
    """Nonces seen, with their expiry, persisted (write + fsync + rename) in one JSON file."""

    def __init__(self, path):
        self.path = path
        self.seen = {}
        try:
            with open(path) as f:
                data = json.load(f)
            self.seen = {str(k): float(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            self.seen = {}

    def prune(self, now):
        self.seen = {n: e for n, e in self.seen.items() if e >= now}

    def use(self, nonce, expires, now=None):
        """Record ``nonce``; raise Refused('replayed') if it was seen and has not expired."""
        now = time.time() if now is None else now
        self.prune(now)
        if nonce in self.seen:
            raise Refused("replayed", "nonce already used")
        self.seen[nonce] = float(expires)
        self._save()

    def _save(self):
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.seen, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)
