"""Carrying the fleet agent into MIGOS: what ``migos init`` puts under ``migos/agent/`` on the
boot FAT, what the MIGOS runtime makes of it, and how the secrets leave the card again.

* ``carry_files`` (pure): the agent's configuration, rewritten to name the files next to it,
  with an explicit ``device`` and ``clock_floor`` (the time init ran: MIGOS may have no RTC
  and no NTP, so the agent never believes it is earlier), plus the per-device key, the MQTT
  password and TLS files as separate files. bootinst.install writes them like every other
  MIGOS file (temporary name, fsync, rename, read back).
* ``runtime_config`` (pure): the configuration the agent runs with inside MIGOS: files in
  RAM, the allow-list forced to ``status`` (anything else is refused as
  ``not-allowed-here``), the migration's event file followed to the status topic.
* ``erase_extents`` (pure) / ``erase_on_disk``: on SUCCESS the key, password and TLS key on
  the old boot FAT are overwritten with zeros (every cluster of their chains), read back,
  and only then deleted; restore-boot does the same through the mounted FAT
  (``erase_mounted``). The key thus does not survive on the card either way.
"""

import json
import os
import stat

from .. import log
from ..errors import UsageError

DEFAULT_CONFIG = "/etc/migos/agent.json"
DIR = "migos/agent"
CONFIG = DIR + "/agent.json"
KEY = DIR + "/agent.key"
PASSWORD = DIR + "/agent.password"
TLS = {"tls_ca": DIR + "/tls-ca.pem", "tls_cert": DIR + "/tls-cert.pem",
       "tls_key": DIR + "/tls-key.pem"}
SECRETS = (KEY, PASSWORD, TLS["tls_key"])
INSIDE_MIGOS_ALLOW = ["status"]
FIX = "fix the agent configuration, or pass --no-agent to migrate without the agent"


def _name(rel):
    return rel.rsplit("/", 1)[1]


def carry_files(cfg, read, init_time, device):
    """{FAT path: bytes} for ``cfg`` (the device's agent.json, as a dict). ``read(path)``
    returns the bytes of a file the configuration names (raises UsageError if it cannot).
    Pure apart from ``read``."""
    from ..fleet import agent as agentmod, install
    out = dict(cfg)
    out["device"] = cfg.get("device") or device
    try:
        agentmod.check_config(dict(out), "the agent configuration")
    except ValueError as e:
        raise UsageError(str(e), FIX)
    files = {}
    key = read(cfg["key_file"], secret=True)
    files[KEY] = install.check_key(key.decode("ascii", "replace"), cfg["key_file"]).encode()
    out["key_file"] = _name(KEY)
    if cfg.get("password_file"):
        pw = read(cfg["password_file"], secret=True)
        files[PASSWORD] = install.check_password(pw.decode("utf-8", "replace"),
                                                 cfg["password_file"]).encode()
        out["password_file"] = _name(PASSWORD)
    broker = dict(cfg.get("broker") or {})
    for k, rel in sorted(TLS.items()):
        if broker.get(k):
            files[rel] = read(broker[k], secret=(k == "tls_key"))
            broker[k] = _name(rel)
    out["broker"] = broker
    out["clock_floor"] = int(init_time)
    for k in ("state_dir", "follow"):
        out.pop(k, None)
    files[CONFIG] = (json.dumps(out, indent=1, sort_keys=True) + "\n").encode()
    return files


def runtime_config(carried, ram_dir, events):
    """The agent's configuration inside MIGOS (pure): the carried one with its files in
    ``ram_dir``, state in RAM, only ``status`` allowed, ``events`` followed to MQTT."""
    cfg = dict(carried)
    cfg["key_file"] = os.path.join(ram_dir, carried["key_file"])
    if carried.get("password_file"):
        cfg["password_file"] = os.path.join(ram_dir, carried["password_file"])
    broker = dict(carried.get("broker") or {})
    for k in TLS:
        if broker.get(k):
            broker[k] = os.path.join(ram_dir, broker[k])
    cfg["broker"] = broker
    cfg["state_dir"] = os.path.join(ram_dir, "state")
    cfg["allow"] = list(INSIDE_MIGOS_ALLOW)
    cfg["follow"] = events
    cfg["log_mqtt"] = True
    return cfg


def config_path(args):
    """The agent configuration ``init`` carries: --agent-config, else /etc/migos/agent.json
    of the OS (under --root) when it exists; None with --no-agent or when there is none."""
    if getattr(args, "no_agent", False):
        return None
    given = getattr(args, "agent_config", None)
    if given:
        if not os.path.isfile(given):
            raise UsageError("--agent-config %s does not exist" % given,
                             "give the agent configuration (JSON), or pass --no-agent")
        return given
    default = under_root(args.root, DEFAULT_CONFIG)
    return default if os.path.isfile(default) else None


def under_root(root, path):
    if root in ("", "/") or not os.path.isabs(path):
        return path
    return os.path.join(root, path.lstrip("/"))


def files_for_init(args, init_time):
    """{FAT path: bytes} to add to what init writes ({} without an agent)."""
    path = config_path(args)
    if path is None:
        return {}
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError("cannot read the agent configuration %s (%s)" % (path, e), FIX)
    if not isinstance(cfg, dict) or not cfg.get("key_file"):
        raise UsageError("the agent configuration %s names no key_file" % path, FIX)

    def read(name, secret=False):
        p = under_root(args.root, name)
        try:
            st = os.stat(p)
            if secret and st.st_mode & 0o077:
                raise UsageError("%s is accessible to others (mode %04o)"
                                 % (p, stat.S_IMODE(st.st_mode)),
                                 "chmod 600 %s, and make a new key if others could read it" % p)
            with open(p, "rb") as f:
                data = f.read()
        except OSError as e:
            raise UsageError("cannot read %s named by the agent configuration %s (%s)"
                             % (p, path, e.strerror), FIX)
        if secret:
            log.add_secret(data.decode("utf-8", "replace").strip())
        return data
    files = carry_files(cfg, read, init_time, log.device_id())
    log.info("the fleet agent goes into MIGOS (%s, allow-list: status)" % path)
    return files


# --- erasing the secrets -----------------------------------------------------------------------

def erase_extents(fat, paths=SECRETS):
    """[(path, [(offset in the file system, length)])] of every cluster of each secret file
    that exists on ``fat`` (a stage-2 fatread.Fat). Pure reading."""
    out = []
    for p in paths:
        entry = fat.lookup(p)
        if entry is None or entry.is_dir:
            continue
        spans = [(fat.cluster_offset(c), fat.cluster_bytes) for c in fat.chain(entry.cluster)] \
            if entry.cluster else []
        out.append((p, spans))
    return out


def _read_direct(fd, offset, length):
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
    return os.pread(fd, length, offset)


def erase_on_disk(device, fs_offset):
    """Zero the secret files' clusters in the FAT at byte ``fs_offset`` of ``device``, read
    them back, then delete the files (mtools, nothing mounted). Returns the paths erased;
    raises OSError/RuntimeError when a zeroed cluster reads back non-zero."""
    from ..stage2 import fatread
    from .. import run
    fd = os.open(device, os.O_RDWR)
    try:
        fat = fatread.Fat(lambda pos, n: os.pread(fd, n, fs_offset + pos))
        plan = erase_extents(fat)
        for _, spans in plan:
            for off, n in spans:
                os.pwrite(fd, b"\0" * n, fs_offset + off)
        os.fsync(fd)
        for p, spans in plan:
            for off, n in spans:
                if _read_direct(fd, fs_offset + off, n).strip(b"\0"):
                    raise RuntimeError("%s: a zeroed cluster at byte %d reads back non-zero"
                                       % (p, fs_offset + off))
    finally:
        os.close(fd)
    for p, _ in plan:
        run.run(["mdel", "-i", "%s@@%d" % (device, fs_offset), "::" + p],
                env={"MTOOLS_SKIP_CHECK": "1"}, timeout=60)
    os.sync()
    return [p for p, _ in plan]


def zero_in_place(path):
    """Overwrite a file's bytes with zeros where they are (no truncation, so the same blocks
    or clusters) and fsync; return its size."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\0" * size, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def erase_mounted(boot, existing_name):
    """restore-boot: overwrite each secret file on the mounted FAT with zeros in place (its
    clusters: same size, no truncation), fsync, read back, delete. Returns the paths."""
    done = []
    for rel in SECRETS:
        name = existing_name(boot, rel)
        if not name:
            continue
        path = os.path.join(boot, name)
        size = zero_in_place(path)
        rfd = os.open(path, os.O_RDONLY)
        try:
            if _read_direct(rfd, 0, size).strip(b"\0"):
                raise OSError("%s reads back non-zero after erasing" % rel)
        finally:
            os.close(rfd)
        os.unlink(path)
        done.append(rel)
    return done
