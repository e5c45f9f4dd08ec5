"""``migos agent --install`` / ``--uninstall``: make the agent a systemd service on the old OS.

Planning is pure (``plan_install``, ``plan_uninstall``, ``unit_text``, ``check_key``,
``check_secret_mode``): it turns the inputs into a list of files (path under the root,
bytes or a source file to copy, mode), links and commands. ``apply`` is the only part that
writes: each file via a temporary name, fsync, rename (a cut leaves the old file or the new
one), then the ``multi-user.target.wants`` link, then ``systemctl`` through ``migos.run``.

What is installed (paths under ``--root``, default ``/``):

* ``/usr/local/lib/migos/migos.pyz``: the running pyz (or ``--pyz``), 0755;
* ``/etc/migos/agent.json``: the broker configuration, validated with the agent's own
  checks, with ``key_file``/``password_file`` pointing at the files below and an
  ``allow`` list (default every command the agent knows), 0600;
* ``/etc/migos/agent.key`` (the per-device key, 64 hex digits) and
  ``/etc/migos/agent.password`` (optional MQTT password): separate files, 0600;
* ``/etc/systemd/system/migos-agent.service`` (``unit_text``), enabled.

With ``--root DIR`` (preparing an image) nothing is started: only the enable link is made.
"""

import json
import os
import re
import stat
import sys

from .. import log, run
from ..errors import UsageError
from . import agent as agentmod, signing
from ..stage1.agentcarry import zero_in_place

PYZ = "/usr/local/lib/migos/migos.pyz"
CONFIG = "/etc/migos/agent.json"
KEY = "/etc/migos/agent.key"
PASSWORD = "/etc/migos/agent.password"
UNIT_NAME = "migos-agent.service"
UNIT = "/etc/systemd/system/" + UNIT_NAME
WANTS = "/etc/systemd/system/multi-user.target.wants/" + UNIT_NAME
PYTHON = "/usr/bin/python3"
MIN_KEY_BYTES = 16
DEFAULT_ALLOW = ("diagnostic", "backup", "init", "takeover", "restore-boot", "status")
RESTART_STEPS_SYSTEMD = 254          # RestartSteps= / RestartMaxDelaySec= appeared in 254

FIX_KEY = "give the device key made by 'migos fleet device-key' (64 hex digits)"


class File(object):
    """One file to install: ``data`` (bytes) or ``source`` (a path to copy)."""

    def __init__(self, path, mode, data=None, source=None, secret=False):
        self.path, self.mode, self.data, self.source, self.secret = path, mode, data, source, secret

    def describe(self):
        size = len(self.data) if self.data is not None else "copy of %s" % self.source
        return "%s (%04o, %s%s)" % (self.path, self.mode, size if isinstance(size, str)
                                    else "%d bytes" % size, ", secret" if self.secret else "")


class Plan(object):
    def __init__(self):
        self.files = []          # File
        self.links = []          # (link path, target)
        self.remove = []         # paths
        self.commands = []       # argv lists

    def lines(self):
        out = ["write %s" % f.describe() for f in self.files]
        out += ["link %s -> %s" % l for l in self.links]
        out += ["remove %s" % p for p in self.remove]
        out += ["run %s" % " ".join(c) for c in self.commands]
        return out


# --- pure checks ------------------------------------------------------------------------------

def check_key(text, source):
    """The key's canonical text (lower-case hex + newline), or UsageError."""
    text = (text or "").strip()
    if not text:
        raise UsageError("the device key from %s is empty" % source, FIX_KEY)
    if not re.match(r"^[0-9a-fA-F]+$", text) or len(text) % 2:
        raise UsageError("the device key from %s is not hex digits" % source, FIX_KEY)
    if len(text) // 2 < MIN_KEY_BYTES:
        raise UsageError("the device key from %s is %d bytes, shorter than %d"
                         % (source, len(text) // 2, MIN_KEY_BYTES), FIX_KEY)
    return text.lower() + "\n"


def check_secret_mode(st_mode, source):
    """A secret file readable or writable by group or others is refused (it may have leaked)."""
    if st_mode & 0o077:
        raise UsageError("%s is accessible to others (mode %04o)" % (source, stat.S_IMODE(st_mode)),
                         "chmod 600 %s, and make a new key if others could read it" % source)


def check_password(text, source):
    text = (text or "").rstrip("\r\n")
    if not text:
        raise UsageError("the MQTT password in %s is empty" % source,
                         "put the broker password in the file, or leave --password-file out")
    if "\n" in text:
        raise UsageError("%s holds more than one line" % source, "put only the password in it")
    return text + "\n"


def agent_config(cfg, device=None, password=False):
    """The installed agent.json (dict) from the given configuration; validated."""
    out = dict(cfg)
    out["key_file"] = KEY
    if password:
        out["password_file"] = PASSWORD
    if device:
        out["device"] = device
    out.setdefault("allow", list(DEFAULT_ALLOW))
    check = json.loads(json.dumps(out))
    try:
        agentmod.check_config(check, "agent configuration")
    except ValueError as e:
        raise UsageError(str(e), "fix the agent configuration")
    return out


def unit_text(systemd_version=None, python=PYTHON):
    """The service unit. Restarts forever (10 s apart, growing to 5 min with systemd >= 254)
    except after exit 2 (bad configuration: restarting cannot help). The hardening keeps
    what the agent's commands need: init/takeover/restore-boot write the boot partition,
    read block devices and reboot, so no ProtectSystem, PrivateDevices or ProtectClock."""
    steps = ""
    if systemd_version is not None and systemd_version >= RESTART_STEPS_SYSTEMD:
        steps = "RestartSteps=5\nRestartMaxDelaySec=300\n"
    return (
        "# Installed by 'migos agent --install'; remove with 'migos agent --uninstall'.\n"
        "[Unit]\n"
        "Description=MIGOS fleet agent (signed commands over MQTT)\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "StartLimitIntervalSec=0\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        "ExecStart=%s %s agent --config %s\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "WorkingDirectory=/\n"
        "Restart=always\n"
        "RestartSec=10\n"
        "%s"
        "RestartPreventExitStatus=2\n"
        "TimeoutStopSec=30\n"
        "UMask=0077\n"
        "NoNewPrivileges=yes\n"
        "PrivateTmp=yes\n"
        "ProtectControlGroups=yes\n"
        "ProtectKernelLogs=yes\n"
        "RestrictRealtime=yes\n"
        "RestrictSUIDSGID=yes\n"
        "RestrictNamespaces=yes\n"
        "LockPersonality=yes\n"
        "SystemCallArchitectures=native\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n" % (python, PYZ, CONFIG, steps))


def plan_install(cfg, key_text, pyz_source, password_text=None, device=None,
                 systemd_version=None, offline=False):
    """Everything ``--install`` does, nothing written. ``offline``: --root (image)."""
    plan = Plan()
    installed = agent_config(cfg, device=device, password=password_text is not None)
    plan.files.append(File(PYZ, 0o755, source=pyz_source))
    plan.files.append(File(CONFIG, 0o600,
                           data=(json.dumps(installed, indent=1, sort_keys=True) + "\n").encode()))
    plan.files.append(File(KEY, 0o600, data=key_text.encode(), secret=True))
    if password_text is not None:
        plan.files.append(File(PASSWORD, 0o600, data=password_text.encode(), secret=True))
    plan.files.append(File(UNIT, 0o644, data=unit_text(systemd_version).encode()))
    if offline:
        plan.links.append((WANTS, "../" + UNIT_NAME))
    else:
        plan.commands.append(["systemctl", "daemon-reload"])
        plan.commands.append(["systemctl", "enable", "--now", UNIT_NAME])
    return plan


def plan_uninstall(present, offline=False):
    """``present``: the set of our paths that exist. The key and password are erased too."""
    plan = Plan()
    if not offline:
        plan.commands.append(["systemctl", "disable", "--now", UNIT_NAME])
    for p in (WANTS, UNIT, KEY, PASSWORD, CONFIG, PYZ):
        if p in present:
            plan.remove.append(p)
    if not offline:
        plan.commands.append(["systemctl", "daemon-reload"])
    return plan


def systemd_version_of(root):
    """The systemd version of the OS at ``root``: ``systemctl --version`` for the live one,
    the name of libsystemd-shared-NNN.so for a tree; None when unknown."""
    if root in ("", "/"):
        proc = run.run(["systemctl", "--version"], check=False)
        m = re.match(r"systemd (\d+)", proc.stdout or "")
        return int(m.group(1)) if m else None
    for d in ("usr/lib/systemd", "lib/systemd"):
        try:
            names = os.listdir(os.path.join(root, d))
        except OSError:
            continue
        for n in names:
            m = re.match(r"libsystemd-shared-(\d+)", n)
            if m:
                return int(m.group(1))
    return None


# --- reading the inputs -----------------------------------------------------------------------

def read_secret_file(path, what):
    """Text of a secret file after checking its mode; '-' reads stdin."""
    if path == "-":
        return sys.stdin.read(), "stdin"
    try:
        st = os.stat(path)
    except OSError as e:
        raise UsageError("cannot read the %s %s (%s)" % (what, path, e.strerror),
                         "give the path of the %s file" % what)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError("the %s %s is not a file" % (what, path), "give a regular file")
    check_secret_mode(st.st_mode, path)
    with open(path) as f:
        return f.read(), path


def running_pyz():
    """The migos.pyz this process runs from, or None (running from a source tree)."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    container = os.path.dirname(pkg)
    return container if os.path.isfile(container) else None


def _under(root, path):
    return os.path.join(root, path.lstrip("/"))


def apply(plan, root="/"):
    for f in plan.files:
        dest = _under(root, f.path)
        os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
        tmp = dest + ".migos-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, f.mode)
        try:
            os.fchmod(fd, f.mode)
            if f.data is not None:
                os.write(fd, f.data)
            else:
                with open(f.source, "rb") as src:
                    while True:
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        os.write(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, dest)
    for link, target in plan.links:
        dest = _under(root, link)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.lexists(dest):
            os.unlink(dest)
        os.symlink(target, dest)
    for p in plan.remove:
        dest = _under(root, p)
        if p in (KEY, PASSWORD):
            erase_file(dest)
        elif os.path.lexists(dest):
            os.unlink(dest)
    for argv in plan.commands:
        run.run(argv)


def erase_file(path):
    """Overwrite a file with zeros in place (same blocks), fsync, then delete it."""
    if not os.path.exists(path):
        return
    zero_in_place(path)
    os.unlink(path)


# --- the command ------------------------------------------------------------------------------

def install(args):
    root = args.root or "/"
    if root in ("", "/") and os.geteuid() != 0 and not args.pretend:
        raise UsageError("migos agent --install must run as root", "run it with sudo")
    if not args.config:
        raise UsageError("--install needs --config FILE", "give the agent configuration (JSON)")
    if not args.key_file:
        raise UsageError("--install needs --key-file FILE (or - for stdin)",
                         "give this device's key from 'migos fleet device-key'")
    try:
        agentmod.load_config(args.config, {"key_file": KEY})
    except ValueError as e:
        raise UsageError(str(e), "fix the agent configuration")
    with open(args.config) as f:       # install what was given, not the defaults filled in
        given = json.load(f)
    key_text, key_src = read_secret_file(args.key_file, "key file")
    key_text = check_key(key_text, key_src)
    password = None
    if args.password_file:
        password, pw_src = read_secret_file(args.password_file, "password file")
        password = check_password(password, pw_src)
        log.add_secret(password.strip())
    elif given.get("password_file"):
        raise UsageError("%s names password_file %s" % (args.config, given["password_file"]),
                         "pass the password with --password-file FILE, it is installed as %s"
                         % PASSWORD)
    pyz = args.pyz or running_pyz()
    if not pyz or not os.path.isfile(pyz):
        raise UsageError("no migos.pyz to install%s" % (" (%s is not a file)" % pyz if pyz else ""),
                         "run this from migos.pyz or pass --pyz PATH")
    offline = root not in ("", "/")
    plan = plan_install(given, key_text, pyz, password_text=password, device=args.device,
                        systemd_version=systemd_version_of(root), offline=offline)
    return _finish(args, plan, root, "installed")


def uninstall(args):
    root = args.root or "/"
    if root in ("", "/") and os.geteuid() != 0 and not args.pretend:
        raise UsageError("migos agent --uninstall must run as root", "run it with sudo")
    present = {p for p in (WANTS, UNIT, KEY, PASSWORD, CONFIG, PYZ)
               if os.path.lexists(_under(root, p))}
    if not present:
        raise UsageError("the agent is not installed under %s" % root, "nothing to remove")
    plan = plan_uninstall(present, offline=root not in ("", "/"))
    return _finish(args, plan, root, "uninstalled")


def _finish(args, plan, root, done):
    lines = plan.lines()
    if args.pretend:
        sys.stdout.write("".join("would %s\n" % l for l in lines))
        return 0
    apply(plan, root)
    log.event("SUCCESS", "migos agent %s under %s" % (done, root), level="debug")
    sys.stdout.write("".join("%s\n" % l for l in lines) + "agent %s\n" % done)
    return 0
