"""Where the runtime's log goes besides the console (DESIGN.md 4): the ``--log-to`` device,
live; and at the end the full log kept in RAM, written where it survives the reboot.

* ``LogDevice``: the device named by ``migos init --log-to`` is mounted (any file system the
  kernel knows) and every event, migrate's included, is appended to ``migos-stage2.log``.
* ``save_to_old_boot``: the whole log as ``migos-stage2.log`` at the root of the old boot FAT,
  through mtools at the partition's byte offset (nothing mounted). After the switch that FAT
  is outside every balenaOS partition and no longer boots anything, so writing it cannot
  break the boot; before the switch (giving the old OS back) it is the old OS's /boot.
* ``save_to_data``: takeover's ``--fallback-log``: the file on balenaOS's data partition.
Every step is best effort with a time limit: a log sink never stops or delays a reboot long.
"""

import os
import tempfile
import time

from .. import log, run

LOG_NAME = "migos-stage2.log"
MOUNTS = "/run/migos/mnt"


def _write_tmp(lines):
    fd, path = tempfile.mkstemp(prefix="migos-log-", dir="/run" if os.path.isdir("/run") else None)
    with os.fdopen(fd, "w") as f:
        f.write("".join(l + "\n" for l in lines))
    return path


class LogDevice(object):
    def __init__(self, device, wait=20):
        self.device, self.wait = device, wait
        self.mountpoint = None
        self.f = None

    def open(self):
        deadline = time.monotonic() + self.wait
        while not os.path.exists(self.device) and time.monotonic() < deadline:
            time.sleep(0.5)
        mnt = os.path.join(MOUNTS, "logdev")
        os.makedirs(mnt, exist_ok=True)
        if run.run(["mount", self.device, mnt], check=False, timeout=30).returncode != 0:
            log.event("ERROR", "log device %s cannot be mounted: logging to the console only"
                      % self.device)
            return False
        self.mountpoint = mnt
        self.f = open(os.path.join(mnt, LOG_NAME), "a", buffering=1)
        log.LOG.add_file(self.f, backlog=True)
        log.event("OK", "logging to %s (%s)" % (self.device, LOG_NAME))
        return True

    def close(self):
        if self.f is None:
            return
        log.LOG.files.remove(self.f)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        self.f = None
        run.run(["umount", self.mountpoint], check=False, timeout=30)


def save_to_old_boot(device, offset, lines=None):
    """Write the full log into the FAT file system at byte ``offset`` of ``device``."""
    path = _write_tmp(log.LOG.memory if lines is None else lines)
    try:
        proc = run.run(["mcopy", "-o", "-i", "%s@@%d" % (device, offset), path, "::" + LOG_NAME],
                       check=False, timeout=60, env={"MTOOLS_SKIP_CHECK": "1"})
        os.sync()
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        log.event("ERROR", "could not keep the stage-2 log on the old boot partition: %s" %
                  (proc.stderr or "").strip()[-200:])
        return False
    log.event("OK", "full stage-2 log kept as %s on the old boot partition (%s at byte %d)"
              % (LOG_NAME, device, offset))
    return True


def save_to_data(part, directory, filename, lines=None):
    """takeover's --fallback-log: the full log as a file on balenaOS's data partition."""
    mnt = os.path.join(MOUNTS, "data")
    os.makedirs(mnt, exist_ok=True)
    if run.run(["mount", "-t", "ext4", part, mnt], check=False, timeout=60).returncode != 0:
        log.event("ERROR", "cannot mount the data partition %s for the fallback log" % part)
        return False
    try:
        dest = os.path.join(mnt, (directory or "/").strip("/"))
        os.makedirs(dest, exist_ok=True)
        with open(os.path.join(dest, filename or LOG_NAME), "w") as f:
            f.write("".join(l + "\n" for l in (log.LOG.memory if lines is None else lines)))
            f.flush()
            os.fsync(f.fileno())
    finally:
        run.run(["umount", mnt], check=False, timeout=60)
    log.event("OK", "fallback log written to %s" % part)
    return True
