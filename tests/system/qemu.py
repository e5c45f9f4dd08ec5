"""Run qemu on the built artefacts and read its serial console (system-test helper).

``Machine`` starts qemu with the console on a pipe, collects every line, and lets a test
wait for a line (``expect``) with a deadline. Disk images are made without root: sfdisk
on a file, mkfs.vfat at the partition's offset, mtools to copy the boot tree in.
"""

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIST = os.path.join(REPO, "dist", "debian-arm64")
UBOOT_QEMU = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
UBOOT_QEMU_ARM = "/usr/lib/u-boot/qemu_arm/u-boot.bin"
# qemu system emulator and virt CPU per target architecture
VIRT = {"arm64": ("qemu-system-aarch64", "cortex-a53"), "armhf": ("qemu-system-arm", "cortex-a15")}


def dist_dir(name):
    return os.path.join(REPO, "dist", name)


class Machine:
    def __init__(self, argv, log_path):
        self.argv = argv
        self.log = open(log_path, "w")
        self.lines = []
        self.stamps = []                 # time.monotonic() when each of ``lines`` was read
        self.q = queue.Queue()
        self.started = time.monotonic()  # power-on, as near as the host can tell
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(4096) if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read(1)
            now = time.monotonic()
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace").rstrip("\r")
                self.log.write(text + "\n")
                self.log.flush()
                self.stamps.append(now)
                self.lines.append(text)
                self.q.put(text)
        if buf:
            self.stamps.append(now)
            self.lines.append(buf.decode(errors="replace"))
        self.q.put(None)

    def expect(self, pattern, timeout):
        """Wait for a console line matching ``pattern``; return the match or raise AssertionError."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no line matching %r within %ss; last lines:\n%s" % (
                    pattern, timeout, "\n".join(self.lines[-25:])))
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("qemu exited (rc=%s) before a line matched %r; last lines:\n%s" % (
                    self.proc.poll(), pattern, "\n".join(self.lines[-25:])))
            m = rx.search(line)
            if m:
                return m

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("qemu still running after %ss; last lines:\n%s" % (
                timeout, "\n".join(self.lines[-15:])))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)   # the reader writes the log until qemu's output ends
        self.log.close()


def qemu_virt(kernel=None, initrd=None, append=None, bios=None, disk=None, extra=(), mem=1024, arch="arm64",
              forward=None):
    """argv for qemu virt. ``forward=(guest_ip, guest_port, host_port)`` or a list of them:
    user-mode network restricted to those forwards from the guest to 127.0.0.1:host_port
    (nothing else is reachable)."""
    system, cpu = VIRT[arch]
    argv = [system, "-M", "virt", "-cpu", cpu, "-m", str(mem), "-nographic",
            "-no-reboot", "-monitor", "none", "-serial", "stdio"]
    forwards = [forward] if isinstance(forward, tuple) else list(forward or ())
    if forwards:
        relay = os.path.join(REPO, "tests", "system", "relay.py")
        fwd = ",".join("guestfwd=tcp:%s:%d-cmd:%s %s 127.0.0.1 %d" % (ip, port, sys.executable, relay, host)
                       for ip, port, host in forwards)
        argv += ["-netdev", "user,id=n0,restrict=on," + fwd,
                 "-device", "virtio-net-device,netdev=n0"]
    else:
        argv += ["-nic", "none"]
    if bios:
        argv += ["-bios", bios]
    if kernel:
        argv += ["-kernel", kernel]
    if initrd:
        argv += ["-initrd", initrd]
    if append:
        argv += ["-append", append]
    if disk:
        argv += ["-drive", "if=none,format=raw,id=d0,file=%s" % disk, "-device", "virtio-blk-device,drive=d0"]
    return argv + list(extra)


def qemu_raspi3b(uboot, dtb, sd, append):
    # U-Boot talks on the mini UART = qemu's second serial; Linux's console is given by append
    return ["qemu-system-aarch64", "-M", "raspi3b", "-accel", "tcg,thread=single", "-m", "1024",
            "-nographic", "-no-reboot", "-monitor", "none", "-serial", "null", "-serial", "stdio",
            "-kernel", uboot, "-dtb", dtb, "-append", append,
            "-drive", "if=sd,format=raw,file=%s" % sd]


def make_boot_disk(path, tree, size_mib=128, part_start_mib=4, extra_files=None):
    """An MBR disk image with one FAT32 partition holding ``tree`` (no root needed)."""
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(["sfdisk", "-q", path], input="label: dos\nstart=%dMiB, type=c, bootable\n" % part_start_mib,
                   text=True, check=True)
    offset = part_start_mib << 20
    sectors = ((size_mib - part_start_mib) << 20) // 512
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", "BOOT", "--offset=%d" % (offset // 512), path,
                    str(sectors // 2)], check=True, capture_output=True)
    img = "%s@@%d" % (path, offset)
    for name in sorted(os.listdir(tree)):
        subprocess.run(["mcopy", "-s", "-i", img, os.path.join(tree, name), "::"], check=True)
    for dest, data in (extra_files or {}).items():
        tmp = path + ".tmpfile"
        with open(tmp, "wb") as f:
            f.write(data)
        subprocess.run(["mcopy", "-o", "-i", img, tmp, "::" + dest], check=True)
        os.unlink(tmp)
    return img


def require_dist(name="debian-arm64", system="qemu-system-aarch64"):
    import pytest
    if not os.path.exists(os.path.join(dist_dir(name), "SHA256SUMS")):
        pytest.fail("dist/%s is not built; run `doit build target=%s` first" % (name, name))
    for tool in (system, "sfdisk", "mkfs.vfat", "mcopy"):
        if not shutil.which(tool):
            pytest.fail("%s is not installed (see README's setup command)" % tool)
