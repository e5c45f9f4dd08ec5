"""The runtime's loop (see the package docstring)."""

import json
import os
import subprocess
import sys
import time

from .. import log
from . import bootdisk, network, plan
from .watchdog import Watchdog

RUN = "/run/migos"
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


def needs_network(settings):
    return (settings.get("image") or {}).get("source") in ("url", "api")


def run_migrate(argv, watchdog):
    """Run ``migos migrate``; forward its events to the console and feed the watchdog on each."""
    cmd = [sys.executable, "-m", "migos"] + argv
    log.event("INI", "running: migos %s" % " ".join(argv))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    for line in proc.stdout:
        watchdog.progress()
        sys.stderr.write(line)
        sys.stderr.flush()
        log.LOG.memory.append(line.rstrip("\n"))
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


def main():
    log.LOG.configure(script="runtime")
    log.event("INI", "MIGOS runtime started")
    disk = bootdisk.find()
    if disk is None:
        log.event("FAIL", "no disk holds migos/migrate.json: nothing to migrate; rebooting in 60 s")
        time.sleep(60)
        subprocess.call(["reboot", "-f"])
        return 1
    settings, files, keyfiles = read_settings(disk)
    device = disk.device
    disk.close()
    log.event("OK", "boot disk %s, image source %s" % (device, (settings.get("image") or {}).get("source")))
    watchdog = Watchdog()
    watchdog.arm()
    if needs_network(settings):
        network.up(keyfiles)
    argv = plan.migrate_argv(device, settings, files)
    attempt = 0
    forward_only = disk_touched(device)      # resumed after a reset: the point of no return is behind us
    while True:
        watchdog.progress()
        rc = run_migrate(argv, watchdog)
        what = plan.outcome(rc)
        if what == plan.DONE:
            log.event("SUCCESS", "migration complete; rebooting into balenaOS")
            reboot(watchdog)
            return 0
        if what == plan.GIVE_BACK and (forward_only or disk_touched(device)):
            what = plan.RETRY
            log.event("ERROR", "migrate refused to start, but this disk was already written: only "
                      "forward from here, retrying")
        if what == plan.GIVE_BACK:
            log.event("FAIL", "migration refused before writing anything; giving the old OS back")
            if restore_boot(device):
                log.event("END", "old boot configuration restored; rebooting into the old OS")
                reboot(watchdog)
                return 2
            log.event("ERROR", "restore-boot failed; retrying in 60 s")
            time.sleep(60)
            continue
        forward_only = True
        attempt += 1
        wait = plan.backoff(attempt)
        log.event("ERROR", "migration stopped (exit %d) after writing; resuming in %d s (attempt %d)"
                  % (rc, wait, attempt))
        for _ in range(wait):
            watchdog.progress()
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
