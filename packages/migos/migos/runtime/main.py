"""The runtime's loop (see the package docstring)."""

import json
import os
import subprocess
import sys
import threading
import time

from .. import log
from . import bootdisk, logsinks, network, plan
from .watchdog import Watchdog

RUN = "/run/migos"
AGENT_DIR = "/run/migos/agent"       # the fleet agent's files, copied from migos/agent/ (RAM)
EVENTS = "/run/migos/events.ndjson"  # every event of the runtime and migrate, followed by the agent
OLD_ROOT = "/run/migos/old"          # the old boot partition is mounted at OLD_ROOT/boot for restore-boot


def read_settings(disk, dest=RUN):
    """Copy what `migos init` left (settings, config.json, keyfiles, hostname) into RAM."""
    os.makedirs(os.path.join(dest, "system-connections"), exist_ok=True)
    settings = json.loads(disk.read("migos/migrate.json").decode("utf-8"))
    files = {"system-connections": []}
    config = disk.read("migos/config.json")
    if config is None:
        raise RuntimeError("migos/config.json is missing on %s" % disk.device)
    files["config.json"] = os.path.join(dest, "config.json")
    with open(files["config.json"], "wb") as f:
        f.write(config)
    keyfiles = {}
    for name in disk.listdir("migos/system-connections"):
        data = disk.read("migos/system-connections/" + name)
        path = os.path.join(dest, "system-connections", name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        files["system-connections"].append(path)
        keyfiles[name] = data.decode("utf-8", "replace")
    return settings, files, keyfiles


def read_agent(disk, dest=AGENT_DIR):
    """Copy migos/agent/ (the fleet agent's configuration, key, password) to RAM; return the
    carried configuration (dict), or None when init carried no agent."""
    from ..stage1 import agentcarry
    names = disk.listdir(agentcarry.DIR)
    if "agent.json" not in names:
        return None
    os.makedirs(dest, mode=0o700, exist_ok=True)
    for name in names:
        data = disk.read(agentcarry.DIR + "/" + name)
        if data is None:
            continue
        fd = os.open(os.path.join(dest, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    with open(os.path.join(dest, "agent.json")) as f:
        return json.load(f)


def start_agent(carried):
    """The fleet agent in the background: only ``status`` allowed, the migration's events
    (EVENTS) followed to the device's status topic. Never fatal: the migration goes on."""
    from .. import run
    from ..stage1 import agentcarry
    try:
        cfg = agentcarry.runtime_config(carried, AGENT_DIR, EVENTS)
        path = os.path.join(AGENT_DIR, "agent-migos.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f)
        proc = run.spawn([sys.executable, "-m", "migos", "agent", "--config", path])
    except Exception as e:
        log.event("ERROR", "the fleet agent could not be started: %s" % e)
        return None
    log.event("OK", "fleet agent started for %s/%s (allow-list: %s)" % (
        cfg.get("fleet"), cfg.get("device"), ", ".join(cfg["allow"])))
    return proc


def stop_agent(proc, drain=3.0):
    """Let the agent ship the last events, then stop it (SIGTERM: it drains and says offline)."""
    if proc is None or proc.poll() is not None:
        return
    time.sleep(drain)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def erase_agent_secrets(device, old_boot):
    """The agent's key and password on the old boot FAT: zeroed, read back, deleted."""
    from ..stage1 import agentcarry
    try:
        erased = agentcarry.erase_on_disk(device, old_boot)
    except Exception as e:
        log.event("ERROR", "could not erase the agent's key from the old boot partition: %s" % e)
        return False
    for p in erased:
        log.event("OK", "erased %s from the old boot partition (clusters zeroed and read back, "
                  "then deleted)" % p)
    return True


def needs_network(settings):
    return (settings.get("image") or {}).get("source") in ("url", "api")


def run_migrate(argv, watchdog, env=None):
    """Run ``migos migrate``; forward its events to every sink and feed the watchdog on each."""
    cmd = [sys.executable, "-m", "migos"] + argv
    log.event("INI", "running: migos %s" % " ".join(argv))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                            env=env)
    for line in proc.stdout:
        watchdog.progress()
        log.LOG.raw(line)
    return proc.wait()


def restore_boot(device):
    """Give the device its old OS back: stage 1's restore-boot on the mounted old boot partition."""
    boot = os.path.join(OLD_ROOT, "boot")
    os.makedirs(boot, exist_ok=True)
    part = partition_device(device, 1)
    subprocess.call(["modprobe", "-q", "vfat"])
    if subprocess.call(["mount", "-t", "vfat", part, boot]) != 0:
        log.event("FAIL", "cannot mount %s to restore the old boot configuration" % part)
        return False
    try:
        rc = subprocess.call([sys.executable, "-m", "migos", "restore-boot", "--root", OLD_ROOT])
        os.sync()
    finally:
        subprocess.call(["umount", boot])
    return rc == 0


def disk_touched(device):
    """True once any migration wrote to ``device``: a stage-2 journal record is on it."""
    from ..stage2 import journal
    try:
        return journal.present(device)
    except Exception:
        return True                  # cannot tell: assume the worst, never give back


def partition_device(device, n):
    return "%s%s%d" % (device, "p" if device[-1].isdigit() else "", n)


def reboot(watchdog):
    watchdog.disarm()
    os.sync()
    log.event("END", "rebooting")
    subprocess.call(["reboot", "-f"])
    time.sleep(30)


def kernel_options(path="/proc/cmdline"):
    try:
        with open(path) as f:
            return plan.cmdline_options(f.read())
    except OSError:
        return {}


def remote_log(settings, env):
    """Ship the runtime's events to migrate.json's ``log.http`` (a RAM spool: the network may
    come later), and let migrate ship its own (MIGOS_LOG_HTTP); None when not configured."""
    url = (settings.get("log") or {}).get("http")
    if not url:
        return None
    from ..fleet import logship
    env["MIGOS_LOG_HTTP"] = url
    env["MIGOS_LOG_SPOOL"] = os.path.join(RUN, "logspool-migrate")
    try:
        shipper = logship.Shipper(os.path.join(RUN, "logspool-runtime"), [logship.HttpTransport(url)])
    except ValueError as e:
        log.event("ERROR", "remote log disabled: %s" % e)
        return None
    shipper.start()
    shipper.install()
    log.event("OK", "shipping the log to %s" % url.split("?")[0])
    return shipper


def keep_full_log(device, old_boot_offset, settings, switched, shipper=None):
    """At the end: the whole log (kept in RAM) where it survives the reboot, and to the
    remote sink when there is one."""
    logset = settings.get("log") or {}
    if shipper is not None:
        from ..fleet import logship
        shipper.stop(drain_timeout=10.0)
        ok = logship.upload_full_log(log.LOG.memory, http_url=logset["http"], retries=3, delay=1.0)
        log.event("OK" if ok else "ERROR", "full log %s the remote sink" % (
            "uploaded to" if ok else "could not be uploaded to"))
    logsinks.save_to_old_boot(device, old_boot_offset)
    if switched and logset.get("fallback_log"):
        logsinks.save_to_data(partition_device(device, 6), logset.get("fallback_log_dir"),
                              logset.get("fallback_log_filename"))


def main():
    log.LOG.configure(script="runtime")
    log.event("INI", "MIGOS runtime started")
    opts = kernel_options()
    disk = bootdisk.find()
    if disk is None:
        log.event("FAIL", "no disk holds migos/migrate.json: nothing to migrate; rebooting in 60 s")
        time.sleep(60)
        subprocess.call(["reboot", "-f"])
        return 1
    settings, files, keyfiles = read_settings(disk)
    carried = read_agent(disk)
    device, old_boot = disk.device, disk.offset
    disk.close()
    if carried is not None:         # the agent follows every event from here on (with the backlog)
        log.LOG.add_file(open(EVENTS, "a", buffering=1), backlog=True)
    log.event("OK", "boot disk %s, image source %s" % (device, (settings.get("image") or {}).get("source")))
    logdev = None
    if (settings.get("log") or {}).get("log_to"):
        logdev = logsinks.LogDevice(settings["log"]["log_to"])
        if not logdev.open():
            logdev = None
    watchdog = Watchdog(stall=opts.get("stall", plan.STALL))
    watchdog.arm()
    agent = []                          # the agent's process, once started
    if needs_network(settings):
        network.up(keyfiles, country=settings.get("wifi_country"))
        if carried is not None:
            agent.append(start_agent(carried))
    elif carried is not None:           # a local image: the network is for the agent only and
        def agent_up():                 # must not delay the migration
            network.up(keyfiles, country=settings.get("wifi_country"))
            agent.append(start_agent(carried))
        threading.Thread(target=agent_up, daemon=True, name="agent-network").start()
    argv = plan.migrate_argv(device, settings, files)
    env = dict(os.environ)
    shipper = remote_log(settings, env)
    if opts.get("fault"):
        env["MIGOS_FAULT"] = opts["fault"]
        log.event("ERROR", "fault injection requested on the kernel command line: %s" % opts["fault"])
    patience = opts.get("patience", settings.get("network_patience_s") or plan.PATIENCE)
    attempt, unreachable_since = 0, None
    touched = disk_touched(device)      # resumed after a reset: the point of no return is behind us

    def finish(switched, rc):
        if switched and carried is not None:
            erase_agent_secrets(device, old_boot)
        keep_full_log(device, old_boot, settings, switched, shipper)
        stop_agent(agent[0] if agent else None)
        if logdev is not None:
            logdev.close()
        reboot(watchdog)
        return rc

    while True:
        watchdog.progress()
        rc = run_migrate(argv, watchdog, env)
        what = plan.outcome(rc)
        touched = touched or (what != plan.DONE and disk_touched(device))
        if what == plan.WAIT and unreachable_since is None:
            unreachable_since = time.monotonic()
        waited = time.monotonic() - unreachable_since if unreachable_since is not None else 0
        step = plan.next_step(what, touched, waited, patience)
        if step == plan.DONE:
            log.event("SUCCESS", "migration complete; rebooting into balenaOS")
            return finish(True, 0)
        if step == plan.RETRY and what == plan.GIVE_BACK:
            log.event("ERROR", "migrate refused to start, but this disk was already written: only "
                      "forward from here, retrying")
        if step == plan.GIVE_BACK:
            log.event("FAIL", "migration refused before writing anything (%s); giving the old OS back"
                      % ("image source unreachable for %ds" % waited if what == plan.WAIT else "exit %d" % rc))
            if restore_boot(device):
                log.event("END", "old boot configuration restored; rebooting into the old OS")
                return finish(False, 2)
            log.event("ERROR", "restore-boot failed; retrying in 60 s")
            time.sleep(60)
            continue
        attempt += 1
        wait = plan.backoff(attempt)
        if step == plan.WAIT:
            log.event("ERROR", "image source unreachable, nothing written; trying again in %d s "
                      "(gives the old OS back after %d s)" % (wait, patience))
        else:
            log.event("ERROR", "migration stopped (exit %d) after writing; resuming in %d s (attempt %d)"
                      % (rc, wait, attempt))
        for _ in range(wait):
            watchdog.progress()
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
