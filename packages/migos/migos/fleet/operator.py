"""``migos fleet``: the operator's side (runs on the operator's machine).

    migos fleet keygen --out fleet.key                     a new fleet key (0600)
    migos fleet device-key --key-file fleet.key --device ID    the key to provision on ID
    migos fleet list                                        devices, online, last state
    migos fleet send (--device ID ... | --all) CMD [ARGS...]
                     [--max-parallel N] [--max-failures M] [--timeout S]

``send`` signs one command per device (signing.make_command) and rolls it out with
``rollout.Rollout``: at most N in flight, no new start once more than M failed, a live
plain-text table while it runs. Exit 0 when every device succeeded, 1 otherwise.
"""

import json
import os
import queue
import sys
import time

from . import signing, topics
from .mqtt import BrokerOptions, Connection, collect
from .rollout import Rollout
from ..errors import UsageError


def broker_options(args):
    host, _, port = (args.broker or "127.0.0.1").partition(":")
    password = None
    if args.password_file:
        try:
            with open(args.password_file) as f:
                password = f.read().strip()
        except OSError as e:
            raise UsageError("cannot read %s (%s)" % (args.password_file, e.strerror),
                             "pass a readable --password-file")
    try:
        port = int(port) if port else (8883 if args.tls_ca else 1883)
    except ValueError:
        raise UsageError("--broker %r has no valid port" % args.broker, "use HOST:PORT")
    return BrokerOptions(host=host, port=port, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                         tls_key=args.tls_key, username=args.username, password=password)


def fleet_key(args):
    if not args.key_file:
        raise UsageError("no --key-file", "pass the fleet key made by 'migos fleet keygen'")
    try:
        return signing.load_key(args.key_file)
    except (OSError, ValueError) as e:
        raise UsageError(str(e), "pass the fleet key made by 'migos fleet keygen'")


def known_devices(opts, fleet, seconds=1.0):
    """{device: {"online": bool|None, "state": {...}}} from the retained topics."""
    out = {}
    for t, payload in collect(opts, "migos/%s/+/+" % fleet, seconds,
                              "migos-fleet-list-%s" % os.urandom(4).hex()):
        dev, leaf = topics.device_of(t), t.rsplit("/", 1)[-1]
        if dev is None or leaf not in ("state", "online"):
            continue
        entry = out.setdefault(dev, {"online": None, "state": {}})
        if leaf == "online":
            entry["online"] = payload == b"1"
        else:
            try:
                entry["state"] = json.loads(payload.decode())
            except ValueError:
                pass
    return out


def cmd_keygen(args):
    if os.path.exists(args.out):
        raise UsageError("%s already exists" % args.out, "choose another --out or remove it")
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(signing.new_fleet_key() + "\n")
    print("fleet key written to %s (keep it secret; devices get 'migos fleet device-key')" % args.out)
    return 0


def cmd_device_key(args):
    key = signing.device_key(fleet_key(args), topics.check_name("device", args.device)).hex()
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    else:
        print(key)
    return 0


def cmd_list(args):
    devices = known_devices(broker_options(args), args.fleet, args.wait)
    if args.json:
        print(json.dumps(devices, indent=2, sort_keys=True))
        return 0
    print("%-24s %-7s %-8s %-12s %s" % ("DEVICE", "ONLINE", "STATE", "COMMAND", "VERSION"))
    for dev in sorted(devices):
        e = devices[dev]
        st = e["state"]
        print("%-24s %-7s %-8s %-12s %s" % (dev, {True: "yes", False: "no", None: "?"}[e["online"]],
                                             st.get("state", "?"), st.get("cmd", ""),
                                             st.get("version", "")))
    return 0


class RolloutRunner:
    """Drives a Rollout over MQTT (I/O around the pure planner)."""

    def __init__(self, opts, fleet, key, cmd, cmd_args, plan, lifetime=600, out=None,
                 refresh=1.0):
        self.opts, self.fleet, self.key = opts, fleet, key
        self.cmd, self.cmd_args, self.plan = cmd, list(cmd_args), plan
        self.lifetime, self.out, self.refresh = lifetime, out, refresh
        self.msgs = queue.Queue()
        self.ids = {}

    def _send(self, conn, device):
        env = signing.make_command(self.key, device, self.cmd, self.cmd_args,
                                   lifetime=self.lifetime)
        self.ids[env["id"]] = device
        conn.publish(topics.topic(self.fleet, device, "cmd"), json.dumps(env))

    def _on_status(self, payload):
        try:
            m = json.loads(payload.decode())
        except ValueError:
            return
        device = self.ids.get(m.get("id"))
        if device is None:
            return
        kind = m.get("type")
        if kind == "result":
            self.plan.finished(device, bool(m.get("ok")), "exit %s" % m.get("rc"))
        elif kind == "refused":
            self.plan.finished(device, False, "refused: %s %s" % (m.get("reason"),
                                                                   m.get("detail", "")))
        elif kind in ("started", "progress") and device in self.plan.detail:
            self.plan.detail[device] = m.get("line", "started")

    def run(self):
        conn = Connection(self.opts, "migos-fleet-%s" % os.urandom(4).hex(),
                          on_message=lambda t, p: self.msgs.put(p))
        conn.subscribe(topics.wildcard(self.fleet, "status"))
        if not conn.start(wait=10):
            conn.stop()
            raise UsageError("cannot connect to MQTT broker %s:%d" % (self.opts.host, self.opts.port),
                             "check --broker and the TLS/password options")
        time.sleep(0.3)          # let the SUBACK arrive before the first command goes out
        last_table = 0.0
        try:
            while True:
                now = time.monotonic()
                for d in self.plan.to_start():
                    self.plan.started(d, now)
                    self._send(conn, d)
                try:
                    self._on_status(self.msgs.get(timeout=0.05))
                    while True:
                        self._on_status(self.msgs.get_nowait())
                except queue.Empty:
                    pass
                self.plan.timed_out(time.monotonic())
                if self.out and time.monotonic() - last_table >= self.refresh:
                    self.out.write(self.plan.table() + "\n\n")
                    self.out.flush()
                    last_table = time.monotonic()
                if self.plan.done:
                    break
        finally:
            conn.stop()
        self.plan.finish()
        if self.out:
            self.out.write(self.plan.table() + "\n")
        return self.plan


def cmd_send(args):
    key = fleet_key(args)
    opts = broker_options(args)
    if args.cmd not in signing.ALLOWED:
        raise UsageError("%r is not a fleet command" % args.cmd,
                         "use one of " + ", ".join(signing.ALLOWED))
    cmd_args = list(args.args)
    if cmd_args[:1] == ["--"]:
        cmd_args = cmd_args[1:]
    if args.all:
        devices = sorted(known_devices(opts, args.fleet, args.wait))
        if not devices:
            raise UsageError("no device of fleet %s has reported to the broker" % args.fleet,
                             "start the agents first, or name devices with --device")
    else:
        devices = args.device or []
        if not devices:
            raise UsageError("no device given", "pass --device ID (repeatable) or --all")
    for d in devices:
        topics.check_name("device", d)
    plan = Rollout(devices, max_parallel=args.max_parallel, max_failures=args.max_failures,
                   timeout=args.timeout)
    RolloutRunner(opts, args.fleet, key, args.cmd, cmd_args, plan, lifetime=args.lifetime,
                  out=sys.stdout).run()
    return 0 if plan.count("ok") == len(plan.order) else 1


def _positive_int(text):
    import argparse
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return v


def register(sub, common_options):
    import argparse
    from . import agent

    p = sub.add_parser("agent", help="run signed fleet commands received over MQTT",
                       description="Subscribe to this device's command topic and run signed, "
                       "allow-listed commands; publish progress, results and logs.")
    common_options(p)
    p.add_argument("--config", metavar="FILE", help="agent configuration (JSON)")
    p.add_argument("--fleet", help="override the configuration's fleet")
    p.add_argument("--device", help="override the device id")
    p.add_argument("--state-dir", metavar="DIR", help="nonces and the log spool (override)")
    p.add_argument("--connect-timeout", type=float, default=10, metavar="S")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--install", action="store_true",
                   help="install the agent as a systemd service (needs --config, --key-file)")
    g.add_argument("--uninstall", action="store_true",
                   help="stop and remove the service, its configuration and key")
    p.add_argument("--key-file", metavar="FILE|-",
                   help="--install: this device's key (from 'migos fleet device-key'; - reads stdin)")
    p.add_argument("--password-file", metavar="FILE", help="--install: the MQTT password")
    p.add_argument("--pyz", metavar="PATH",
                   help="--install: the migos.pyz to install (default: the running one)")
    p.add_argument("--pretend", action="store_true", help="--install/--uninstall: print the plan only")
    p.set_defaults(func=agent.main)

    p = sub.add_parser("fleet", help="operate a fleet: list devices, send commands, roll out",
                       description=__doc__.split("\n\n")[1])
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION", parser_class=p.__class__)
    fsub.required = True

    def broker(q):
        common_options(q)
        q.add_argument("--broker", metavar="HOST[:PORT]", default="127.0.0.1")
        q.add_argument("--tls-ca", metavar="PEM", help="CA certificate: use TLS")
        q.add_argument("--tls-cert", metavar="PEM", help="client certificate")
        q.add_argument("--tls-key", metavar="PEM", help="client certificate's key")
        q.add_argument("--username")
        q.add_argument("--password-file", metavar="FILE")
        q.add_argument("--fleet", required=True, metavar="NAME")

    q = fsub.add_parser("keygen", help="write a new random fleet key")
    common_options(q)
    q.add_argument("--out", required=True, metavar="FILE")
    q.set_defaults(func=cmd_keygen)

    q = fsub.add_parser("device-key", help="the key to provision on one device")
    common_options(q)
    q.add_argument("--key-file", required=True, metavar="FILE")
    q.add_argument("--device", required=True)
    q.add_argument("--out", metavar="FILE")
    q.set_defaults(func=cmd_device_key)

    q = fsub.add_parser("list", help="devices, whether online, their last state")
    broker(q)
    q.add_argument("--wait", type=float, default=1.0, metavar="S",
                   help="seconds to collect retained states (default 1)")
    q.set_defaults(func=cmd_list)

    q = fsub.add_parser("send", help="sign and send a command to devices, with rollout limits")
    broker(q)
    q.add_argument("--key-file", required=True, metavar="FILE", help="the fleet key")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--device", action="append", metavar="ID", help="repeatable")
    g.add_argument("--all", action="store_true", help="every device that reported its state")
    q.add_argument("--max-parallel", type=_positive_int, default=10, metavar="N",
                   help="at most N devices running the command at once (default 10)")
    q.add_argument("--max-failures", type=_positive_int, default=0, metavar="M",
                   help="start no new device once more than M failed (default 0)")
    q.add_argument("--timeout", type=float, default=3600, metavar="S",
                   help="a device silent for S seconds after the command counts as failed")
    q.add_argument("--lifetime", type=float, default=600, metavar="S",
                   help="seconds the signed command stays valid (default 600)")
    q.add_argument("--wait", type=float, default=1.0, metavar="S",
                   help="with --all: seconds to collect the device list")
    q.add_argument("cmd", metavar="CMD", help=", ".join(signing.ALLOWED))
    q.add_argument("args", nargs=argparse.REMAINDER, help="the command's options")
    q.set_defaults(func=cmd_send)
