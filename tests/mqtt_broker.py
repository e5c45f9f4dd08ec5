"""Debian's mosquitto, started by a test on 127.0.0.1 at a random free port."""

import os
import shutil
import socket
import subprocess
import time

import pytest


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    def __init__(self, workdir, port=None, tls=None, password_file=None, extra=()):
        self.workdir, self.port = workdir, port or free_port()
        self.extra = list(extra)
        self.tls, self.password_file = tls, password_file
        self.proc = None

    def config(self):
        lines = ["listener %d 127.0.0.1" % self.port, "persistence false",
                 "log_dest stderr", "max_queued_messages 100000"]
        if os.geteuid() == 0:       # else mosquitto drops to its own user and cannot read tmp files
            lines.append("user root")
        if self.password_file:
            lines += ["allow_anonymous false", "password_file %s" % self.password_file]
        else:
            lines += ["allow_anonymous true"]
        if self.tls:
            lines += ["cafile %s" % self.tls["ca"], "certfile %s" % self.tls["cert"],
                      "keyfile %s" % self.tls["key"]]
        lines += self.extra
        return "\n".join(lines) + "\n"

    def start(self):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
        conf = os.path.join(self.workdir, "mosquitto-%d.conf" % self.port)
        with open(conf, "w") as f:
            f.write(self.config())
        self.log = open(os.path.join(self.workdir, "mosquitto-%d.log" % self.port), "ab")
        self.proc = subprocess.Popen([exe, "-c", conf], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("mosquitto exited: see %s" % self.log.name)
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen on %d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    b = Broker(str(tmp_path)).start()
    yield b
    b.stop()
