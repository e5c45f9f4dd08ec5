"""``migos agent``: run signed, allow-listed commands received over MQTT (device side).

The agent connects to the broker (TLS and username/password or a client certificate),
subscribes to ``migos/FLEET/DEVICE/cmd`` and, for each message:

1. verifies it (``signing.check``: HMAC with this device's key, device name, allow-list,
   expiry, then the persistent nonce store); anything else is refused, logged and
   answered with ``{"type": "refused", "reason": ...}`` on the status topic;
2. checks the arguments by parsing them with that subcommand's own option parser;
3. runs it (one at a time; ``status`` is answered at once even while busy) as a child
   ``migos CMD ARGS…`` process, publishing every output line as ``progress`` and the
   exit code as ``result`` on ``migos/FLEET/DEVICE/status``; the retained
   ``migos/FLEET/DEVICE/state`` always holds the last state.

Its own JSON log events go through ``logship`` (MQTT status topic and/or HTTP) with
the on-disk spool under ``state_dir``. Configuration: a JSON file (see ``load_config``).
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time

from .. import __version__, log
from . import logship, signing, topics
from .mqtt import BrokerOptions, Connection


def load_config(path, overrides=None):
    """The agent's JSON configuration::

        {"fleet": "NAME", "device": "ID (default: this device's id)",
         "broker": {"host": "...", "port": 8883, "tls_ca": "ca.pem", "tls_cert": "...",
                    "tls_key": "...", "username": "..."},
         "password_file": "/etc/migos/agent.password", "key_file": "/etc/migos/agent.key",
         "state_dir": "/var/lib/migos-agent", "log_http": "https://... (optional)",
         "log_mqtt": true,
         "allow": ["diagnostic", "backup", "init", "takeover", "restore-boot", "status"],
         "clock_floor": 1700000000, "follow": "/run/migos/events.ndjson"}

    ``allow``: the commands this device accepts (default: all of signing.ALLOWED); a signed
    command outside it is refused as ``not-allowed-here``. ``clock_floor`` (epoch seconds):
    the agent never believes the clock is earlier (MIGOS may have no RTC and no NTP).
    ``follow``: a file of JSON events (one a line) that the agent tails and ships.
    """
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise ValueError("cannot read agent configuration %s (%s)" % (path, e.strerror))
    except ValueError as e:
        raise ValueError("agent configuration %s is not valid JSON (%s)" % (path, e))
    if not isinstance(cfg, dict):
        raise ValueError("agent configuration %s is not a JSON object" % path)
    cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return check_config(cfg, "agent configuration %s" % path)


def check_config(cfg, source="the agent configuration"):
    """Validate a configuration dict (see load_config); fill in defaults; return it."""
    for k in ("fleet", "key_file"):
        if not cfg.get(k):
            raise ValueError("%s lacks %r" % (source, k))
    cfg.setdefault("device", log.device_id())
    cfg.setdefault("state_dir", "/var/lib/migos-agent")
    cfg.setdefault("broker", {})
    cfg.setdefault("log_mqtt", True)
    cfg.setdefault("allow", list(signing.ALLOWED))
    topics.check_name("fleet", cfg["fleet"])
    topics.check_name("device", cfg["device"])
    broker = cfg["broker"]
    if not isinstance(broker, dict):
        raise ValueError("%s: 'broker' is not an object" % source)
    if not isinstance(broker.get("host", "127.0.0.1"), str) or not broker.get("host", "x"):
        raise ValueError("%s: broker 'host' is not a host name" % source)
    port = broker.get("port", 1883)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError("%s: broker 'port' %r is not a port number"
                         % (source, port))
    for k in ("key_file", "password_file", "state_dir", "follow", "log_http"):
        if cfg.get(k) is not None and not isinstance(cfg[k], str):
            raise ValueError("%s: %r is not a string" % (source, k))
    allow = cfg["allow"]
    if not isinstance(allow, list) or not all(isinstance(c, str) for c in allow):
        raise ValueError("%s: 'allow' is not a list of command names" % source)
    unknown = [c for c in allow if c not in signing.ALLOWED]
    if unknown:
        raise ValueError("%s: 'allow' names %s; the agent runs only %s"
                         % (source, ", ".join(unknown), ", ".join(signing.ALLOWED)))
    floor = cfg.get("clock_floor", 0)
    if isinstance(floor, bool) or not isinstance(floor, (int, float)):
        raise ValueError("%s: 'clock_floor' is not a number" % source)
    return cfg


def clock(floor=0):
    """Now, but never earlier than ``floor`` (a device without RTC boots in 1970)."""
    return max(time.time(), float(floor or 0))


def migos_argv():
    """How to run this very ``migos`` as a child: the pyz, or ``python -m migos``."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    container = os.path.dirname(pkg)
    if os.path.isfile(container):          # migos.pyz/migos/fleet/agent.py
        return [sys.executable, container], {}
    return [sys.executable, "-m", "migos"], {"PYTHONPATH": container}


def subprocess_runner(cmd, args, progress):
    """Run ``migos CMD ARGS`` and feed each output line to ``progress``; return its exit code."""
    argv, env = migos_argv()
    env = dict(os.environ, **env)
    proc = subprocess.Popen(argv + [cmd] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, universal_newlines=True)
    for line in proc.stdout:
        progress(line.rstrip("\n"))
    return proc.wait()


def check_arguments(cmd, args):
    """Parse ``args`` with the subcommand's own parser; Refused if they do not parse."""
    if cmd == "status":
        if args:
            raise signing.Refused("bad-arguments", "status takes no arguments")
        return
    from ..cli import build_parser
    import contextlib
    import io
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args([cmd] + list(args))
    except SystemExit:
        raise signing.Refused("bad-arguments", err.getvalue().strip().splitlines()[-1]
                              if err.getvalue().strip() else "arguments do not parse")


class Agent:
    def __init__(self, cfg, key, runner=subprocess_runner, password=None, ship_logs=True):
        self.cfg = cfg
        self.key = key
        self.fleet, self.device = cfg["fleet"], cfg["device"]
        self.runner = runner
        os.makedirs(cfg["state_dir"], exist_ok=True)
        self.nonces = signing.NonceStore(os.path.join(cfg["state_dir"], "nonces.json"))
        self.opts = BrokerOptions.from_dict(cfg.get("broker", {}), password=password)
        self.t_cmd = topics.topic(self.fleet, self.device, "cmd")
        self.t_status = topics.topic(self.fleet, self.device, "status")
        self.t_state = topics.topic(self.fleet, self.device, "state")
        self.t_online = topics.topic(self.fleet, self.device, "online")
        self.inbox = queue.Queue()
        self.busy = threading.Lock()
        self.state = {"state": "idle"}
        self.refused = []        # (reason, detail), for tests and status
        self.allow = tuple(cfg.get("allow", signing.ALLOWED))
        self.clock_floor = float(cfg.get("clock_floor") or 0)
        self.conn = Connection(self.opts, "migos-agent-%s-%s" % (self.fleet, self.device),
                               on_message=lambda t, p: self.inbox.put(p),
                               will=(self.t_online, "0"), clean_session=False,
                               on_connect=self._online)
        self.conn.subscribe(self.t_cmd)
        self.shipper = None
        if ship_logs:
            transports = []
            if cfg.get("log_mqtt", True):
                transports.append(logship.MqttTransport(self.conn, self.t_status))
            if cfg.get("log_http"):
                transports.append(logship.HttpTransport(cfg["log_http"]))
            if transports:
                self.shipper = logship.Shipper(os.path.join(cfg["state_dir"], "logspool"),
                                               transports, interval=cfg.get("log_interval", 1.0),
                                               max_backoff=cfg.get("log_max_backoff", 30.0))
        self._stop = threading.Event()
        self._worker = None
        self._follower = None

    # -- publishing
    def _publish(self, topic_name, obj, retain=False):
        obj = dict(obj, device=self.device, ts=time.time())
        self.conn.publish(topic_name, json.dumps(log.redact(obj), separators=(",", ":")),
                          retain=retain)

    def _set_state(self, **state):
        self.state = dict(state, version=__version__)
        self._publish(self.t_state, self.state, retain=True)

    def _online(self):
        self.conn.publish(self.t_online, "1", retain=True)
        self._set_state(**self.state)

    # -- commands
    def handle(self, payload, now=None):
        """Verify and dispatch one command message (the worker thread calls this)."""
        env = None
        try:
            try:
                env = json.loads(payload.decode() if isinstance(payload, bytes) else payload)
            except ValueError:
                raise signing.Refused("malformed", "not JSON")
            now = clock(self.clock_floor) if now is None else now
            signing.check(self.key, self.device, env, now=now)
            if env["cmd"] not in self.allow:
                raise signing.Refused("not-allowed-here", "%r is not allowed on this device "
                                      "(allowed: %s)" % (env["cmd"], ", ".join(self.allow)))
            check_arguments(env["cmd"], env["args"])
            self.nonces.use(env["nonce"], env["expires"], now=now)
        except signing.Refused as r:
            cid = env.get("id") if isinstance(env, dict) else None
            self.refused.append((r.reason, r.detail))
            log.event("ERROR", "command refused: %s (%s)" % (r.reason, r.detail), level="warn",
                      reason=r.reason, command_id=cid)
            self._publish(self.t_status, {"type": "refused", "id": cid, "reason": r.reason,
                                          "detail": r.detail})
            return "refused"
        if env["cmd"] == "status":
            self._publish(self.t_status, {"type": "result", "id": env["id"], "cmd": "status",
                                          "rc": 0, "ok": True, "status": self.status()})
            return "status"
        if not self.busy.acquire(blocking=False):
            self._publish(self.t_status, {"type": "refused", "id": env["id"], "reason": "busy",
                                          "detail": "another command is running"})
            log.event("ERROR", "command refused: busy", level="warn", command_id=env["id"])
            return "busy"
        threading.Thread(target=self._run, args=(env,), daemon=True).start()
        return "started"

    def _run(self, env):
        cid, cmd = env["id"], env["cmd"]
        try:
            log.event("INI", "running %s" % cmd, command_id=cid, args=env["args"])
            self._set_state(state="running", cmd=cmd, id=cid)
            self._publish(self.t_status, {"type": "started", "id": cid, "cmd": cmd})

            def progress(line):
                self._publish(self.t_status, {"type": "progress", "id": cid, "line": line})
                self._keep_child_event(line, cid)
            try:
                rc = self.runner(cmd, env["args"], progress)
            except Exception as e:   # a runner that blows up is a failed command
                progress("runner error: %s" % e)
                rc = 1
            ok = rc == 0
            log.event("SUCCESS" if ok else "FAIL", "%s exited %d" % (cmd, rc), command_id=cid)
            self._publish(self.t_status, {"type": "result", "id": cid, "cmd": cmd, "rc": rc,
                                          "ok": ok})
            self._set_state(state="done" if ok else "failed", cmd=cmd, id=cid, rc=rc)
        finally:
            self.busy.release()

    def _keep_child_event(self, line, cid):
        """The child's JSON log events also go through the durable spool."""
        if self.shipper is None or not line.startswith("{"):
            return
        try:
            ev = json.loads(line)
        except ValueError:
            return
        if isinstance(ev, dict) and ev.get("state") in log.STATES:
            self.shipper.enqueue(log.redact(dict(ev, command_id=cid)))

    def status(self):
        return {"state": self.state, "version": __version__, "fleet": self.fleet,
                "log_pending": self.shipper.pending() if self.shipper else 0,
                "refused": len(self.refused), "allow": list(self.allow)}

    def _follow(self, path):
        """Tail ``path`` (JSON events, one a line; it may appear later) into the spool."""
        f, partial = None, ""
        while not self._stop.is_set():
            if f is None:
                try:
                    f = open(path, "r", errors="replace")
                except OSError:
                    self._stop.wait(0.5)
                    continue
            chunk = f.read(65536)
            if not chunk:
                self._stop.wait(0.2)
                continue
            lines = (partial + chunk).split("\n")
            partial = lines.pop()
            for line in lines:
                ev = None
                if line.startswith("{"):
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        pass
                if isinstance(ev, dict) and ev.get("state") in log.STATES:
                    self.shipper.enqueue(log.redact(ev))
        if f is not None:
            f.close()

    # -- life cycle
    def _work(self):
        while not self._stop.is_set():
            try:
                payload = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            self.handle(payload)

    def start(self, wait=10.0):
        if self.shipper:
            self.shipper.start()
            self.shipper.install()
        self._worker = threading.Thread(target=self._work, daemon=True, name="migos-agent")
        self._worker.start()
        if self.cfg.get("follow") and self.shipper is not None:
            self._follower = threading.Thread(target=self._follow, args=(self.cfg["follow"],),
                                              daemon=True, name="migos-agent-follow")
            self._follower.start()
        return self.conn.start(wait=wait)

    def stop(self):
        self._stop.set()
        if self._worker:
            self._worker.join(5)
        if self._follower:
            self._follower.join(5)
        if self.shipper:
            self.shipper.stop(drain_timeout=1.0)
        try:
            self.conn.publish(self.t_online, "0", retain=True)
        finally:
            self.conn.stop()


def main(args):
    from ..errors import UsageError
    if getattr(args, "install", False) or getattr(args, "uninstall", False):
        from . import install
        return install.install(args) if args.install else install.uninstall(args)
    if not args.config:
        raise UsageError("migos agent needs --config FILE", "give the agent configuration (JSON)")
    try:
        cfg = load_config(args.config, {"fleet": args.fleet, "device": args.device,
                                        "state_dir": args.state_dir})
        key = signing.load_key(cfg["key_file"])
        password = None
        if cfg.get("password_file"):
            with open(cfg["password_file"]) as f:
                password = f.read().strip()
            log.add_secret(password)
    except (ValueError, OSError) as e:
        raise UsageError(str(e), "fix the agent configuration (see 'migos agent --help')")
    import signal

    def _term(signum, frame):      # systemd stop: flush logs, publish offline, exit 0
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _term)
    agent = Agent(cfg, key, password=password)
    if not agent.start(wait=args.connect_timeout):
        log.event("ERROR", "broker %s:%d not reachable yet; retrying in the background" % (
            agent.opts.host, agent.opts.port), level="warn")
    log.event("INI", "agent listening on %s" % agent.t_cmd)
    try:
        while True:
            time.sleep(1)
    finally:
        log.event("END", "agent stopping")
        agent.stop()
