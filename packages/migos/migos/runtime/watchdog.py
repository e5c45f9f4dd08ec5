"""The hardware watchdog, fed only while the migration makes progress.

``Watchdog.progress()`` is called for every event the migration logs. A feeder thread
pets /dev/watchdog every few seconds as long as the last progress is younger than
``stall`` seconds; when the migration hangs, feeding stops and the hardware resets the
board, which boots MIGOS again and resumes. Without a hardware watchdog (qemu virt
without one) the same thread forces a reboot itself after the stall.
"""

import fcntl
import os
import struct
import threading
import time

from .. import log

WDIOC_SETTIMEOUT = 0xC0045706     # _IOWR('W', 6, int)


class Watchdog(object):
    def __init__(self, path="/dev/watchdog", timeout=15, stall=180, reboot=None, clock=time.monotonic):
        self.path, self.timeout, self.stall = path, timeout, stall
        self.clock = clock
        self.last = clock()
        self.fd = None
        self.reboot = reboot or (lambda: os.system("reboot -f"))
        self._stop = threading.Event()

    def arm(self):
        try:
            self.fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            log.event("OK", "no hardware watchdog at %s; a software watchdog reboots after %ds without progress"
                      % (self.path, self.stall))
            self.fd = None
        else:
            try:
                fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, struct.pack("i", self.timeout))
            except OSError:
                pass
            log.event("OK", "hardware watchdog armed (%ds), fed while the migration makes progress" % self.timeout)
        t = threading.Thread(target=self._run, name="watchdog", daemon=True)
        t.start()

    def progress(self):
        self.last = self.clock()

    def stalled(self):
        return self.clock() - self.last > self.stall

    def _run(self):
        while not self._stop.wait(max(1, self.timeout // 3)):
            if self.stalled():
                log.event("ERROR", "no progress for %ds: letting the watchdog reset the board" % self.stall)
                if self.fd is None:
                    self.reboot()
                return              # stop feeding: the hardware resets us
            if self.fd is not None:
                os.write(self.fd, b"\0")

    def disarm(self):
        """Stop feeding and disarm (magic close) before a deliberate reboot."""
        self._stop.set()
        if self.fd is not None:
            try:
                os.write(self.fd, b"V")
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
