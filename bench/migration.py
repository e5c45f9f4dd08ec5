#!/usr/bin/env python3
"""Benchmark: a whole migration in qemu, power-on to ``BALENA BOOTED``, split by state.

    .venv/bin/python bench/migration.py [--size-mib 1024] [--work DIR] [--keep] [--mem 1024]

Builds a synthetic balenaOS image of about ``--size-mib`` MiB that really boots on the emulated
device (tests/system/emulated_pi.py): resin-boot 48 MiB, resin-state 20 MiB, rootA = rootB =
2/5 of the rest, resin-data the remainder; file systems filled to 30 % (state/data 15 %), 30 %
of that content random, the rest compressible text (the settings of the whole-migration test);
compressed with ``zstd -3``. The old-OS disk is the image plus the old boot partition (4..100
MiB), the journal and a 64 MiB margin, with MIGOS's boot files on p1 as in
tests/system/test_migration.py. The image is served from 127.0.0.1 (tests/balena_api.py);
qemu ``virt`` (TCG, one vCPU, U-Boot as firmware) boots MIGOS, which migrates the disk and
reboots; a second power-on must print ``BALENA BOOTED`` with the injected hostname and uuid.

Every console line is timestamped on the host when read. Printed:

* a table: power-on -> ``MIGOS <version> ready`` -> each stage-2 state as the console shows it
  (``state PREFLIGHT`` ... ``state DONE``; WRITE is split by INJECT, which runs when the stream
  has passed resin-boot) -> the SUCCESS event -> qemu's exit (reboot) -> second power-on ->
  ``BALENA BOOTED``, and the total;
* the image size (raw, compressed), the write phase's MiB/s, migrate's own ``timings``;
* the baseline on the same input in the same run: ``zstd -dc IMG | dd of=COPY bs=4M
  conv=notrunc,fsync`` on the host into a copy of the old disk file, and the ratio
  migrate's write phase (emulated: TCG arm64 guest, virtio-blk on a file) / that pipe (native).
  The ratio measures the cost of emulation, not a target for the device.

Host load (another qemu on the 2 cores) slows the guest: the load averages are printed.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from tests.balena_api import BalenaApi  # noqa: E402
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "packages", "migos"))
from tests.balena_image import compress, make_balena_image  # noqa: E402
from tests.system import emulated_pi as pi  # noqa: E402
from tests.system.qemu import DIST, Machine  # noqa: E402

MIB = 1 << 20
HOSTNAME = "bookworm-pi"          # kept from the old OS (tests/os_fixtures.py, bookworm)
DEVICE_TYPE = "raspberrypi4-64"
READY = re.compile(r"^MIGOS \S+ ready$")
STATE = re.compile(r'"msg": "state ([A-Z_]+)"')
SUCCESS = re.compile(r'"state": "SUCCESS"')
BOOTED = re.compile(r"BALENA BOOTED hostname=(\S*) uuid=(\S*)")
PANIC = "Kernel panic - not syncing"


def wait_for(machine, pattern, timeout):
    """``machine.expect`` that gives up at once on a kernel panic (qemu would hang there)."""
    m = machine.expect("%s|%s" % (pattern, PANIC), timeout=timeout)
    if PANIC in m.group(0):
        raise SystemExit("kernel panic; last lines:\n" + "\n".join(machine.lines[-15:]))
    return re.search(pattern, m.group(0))


def geometry(size_mib):
    """(boot, root, state, data) MiB summing with the 3 x 4 MiB alignment gaps to ``size_mib``."""
    boot, state = 48, 20
    root = (size_mib - 12 - boot - state) * 2 // 5
    data = size_mib - 12 - boot - 2 * root - state
    if root < 16 or data < 8:
        raise SystemExit("--size-mib %d is too small (at least 128)" % size_mib)
    return boot, root, state, data


def prepare(work, size_mib):
    """Image (raw, .zst), old-OS disk prepared by `migos init`, config; as test_migration's Rig."""
    boot, root, state, data = geometry(size_mib)
    raw = os.path.join(work, "balena.img")
    make_balena_image(raw, DEVICE_TYPE, boot_files=pi.bootable_balena_files(work),
                      boot_mib=boot, root_mib=root, state_mib=state, data_mib=data,
                      kernel_mib=0.0625, fill=0.3, random_fraction=0.3)
    packed = compress(raw, "zst")
    config = {"deviceType": DEVICE_TYPE, "applicationId": 1234, "uuid": uuid.uuid4().hex,
              "apiEndpoint": "http://%s:%d" % (pi.GUEST_SERVER, pi.GUEST_PORT),
              "apiKey": secrets.token_hex(16)}
    url = "http://%s:%d/files/balena.img.zst" % (pi.GUEST_SERVER, pi.GUEST_PORT)
    disk_mib = max(4000, 100 + 4 + -(-os.path.getsize(raw) // MIB) + 64)
    disk, _, _ = pi.old_os_disk(work, url, config, size_mib=disk_mib)
    return raw, packed, disk, config, (boot, root, state, data), disk_mib


def host_pipe(packed, disk, work):
    """Seconds for ``zstd -dc | dd conv=notrunc,fsync`` into a copy of the old disk file."""
    copy = os.path.join(work, "baseline-disk.img")
    subprocess.run(["cp", "--sparse=always", disk, copy], check=True)
    try:
        t = time.monotonic()
        subprocess.run("zstd -q -dc '%s' | dd of='%s' bs=4M conv=notrunc,fsync status=none"
                       % (packed, copy), shell=True, check=True)
        return time.monotonic() - t
    finally:
        os.unlink(copy)


def events(machine):
    """[(label, host time)] of the milestones on one machine's console."""
    out = []
    for line, t in zip(machine.lines, machine.stamps):
        if READY.search(line):
            out.append(("MIGOS ready", t))
        m = STATE.search(line)
        if m:
            out.append(("state " + m.group(1), t))
        if SUCCESS.search(line) and '"timings"' in line:
            out.append(("SUCCESS event", t))
        if BOOTED.search(line):
            out.append(("BALENA BOOTED", t))
    return out


def migrate_json(machine):
    """(timings of migrate's SUCCESS event, bytes of its last write progress event)."""
    timings, written = None, None
    for line in machine.lines:
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("state") == "SUCCESS" and "timings" in ev:
            timings = ev["timings"]
        if ev.get("progress") == "write" and "total" in ev:
            written = ev["total"]
    return timings, written


def table(first, exit_t, second):
    """Rows (from, to, seconds) and the per-state sums, all host-timed."""
    rows = []
    ev = events(first)
    prev_label, prev_t = "power-on", first.started
    for label, t in ev:
        rows.append((prev_label, label, t - prev_t))
        prev_label, prev_t = label, t
    rows.append((prev_label, "qemu exit (reboot)", exit_t - prev_t))
    rows.append(("qemu exit", "second power-on", second.started - exit_t))
    prev_label, prev_t = "second power-on", second.started
    for label, t in events(second):
        rows.append((prev_label, label, t - prev_t))
        prev_label, prev_t = label, t
    sums = {}
    for frm, _to, secs in rows:
        if frm.startswith("state "):
            sums[frm] = sums.get(frm, 0.0) + secs
    return rows, sums


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="image size (default 1024)")
    ap.add_argument("--work", help="work directory (default: a new one under /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--mem", type=int, default=1024, help="guest RAM in MiB (default 1024)")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(DIST, "SHA256SUMS")):
        raise SystemExit("%s is not built; run `doit build` first" % DIST)
    if a.work:
        made = not os.path.exists(a.work) or not os.listdir(a.work)
        os.makedirs(a.work, exist_ok=True)
        work = a.work
    else:
        made, work = True, tempfile.mkdtemp(prefix="migos-bench-migration-", dir="/var/tmp")
    try:
        run(a, work)
    finally:
        if a.keep or not made:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(a, work):
    load0 = os.getloadavg()
    t = time.monotonic()
    raw, packed, disk, config, geo, disk_mib = prepare(work, a.size_mib)
    raw_b, packed_b = os.path.getsize(raw), os.path.getsize(packed)
    print("setup %.0fs: image %.0f MiB raw (boot %d, rootA/rootB %d, state %d, data %d MiB; fill 0.3, "
          "random 0.3), %.1f MiB zstd -3 (%.1f%%); old disk %d MiB; guest RAM %d MiB" % (
              time.monotonic() - t, raw_b / MIB, geo[0], geo[1], geo[2], geo[3], packed_b / MIB,
              100.0 * packed_b / raw_b, disk_mib, a.mem))
    pipe_s = host_pipe(packed, disk, work)
    print("baseline (host, native): zstd -dc | dd bs=4M conv=notrunc,fsync: %.2fs, %.0f MiB/s"
          % (pipe_s, raw_b / MIB / pipe_s))

    timeout_migrate = 600 + 3 * a.size_mib
    with BalenaApi(files={"balena.img.zst": packed}) as api:
        port = int(api.url.rsplit(":", 1)[1])
        fwd = (pi.GUEST_SERVER, pi.GUEST_PORT, port)
        argv = pi.firmware_argv(disk, work, forward=fwd, mem=a.mem, extra=("-device", "i6300esb"))
        first = Machine(argv, os.path.join(work, "boot1.log"))
        try:
            wait_for(first, READY.pattern, 300)
            wait_for(first, r'"state": "SUCCESS".*"timings"', timeout_migrate)
            rc = first.wait_exit(180)
            exit_t = time.monotonic()
            if rc != 0:
                raise SystemExit("qemu exited %s after the migration" % rc)
        finally:
            first.kill()
        served = api.total_sent("/files/balena.img.zst")
        argv = pi.firmware_argv(disk, work, forward=fwd, mem=a.mem, extra=("-device", "i6300esb"))
        second = Machine(argv, os.path.join(work, "boot2.log"))  # power on again at once
        try:
            m = wait_for(second, BOOTED.pattern, 300)
            if (m.group(1), m.group(2)) != (HOSTNAME, config["uuid"]):
                raise SystemExit("balenaOS booted with %r, want %r" % (
                    m.groups(), (HOSTNAME, config["uuid"])))
        finally:
            second.kill()
    load1 = os.getloadavg()

    rows, sums = table(first, exit_t, second)
    print("\n%-22s %-22s %9s %9s" % ("from", "to", "seconds", "at"))
    at = 0.0
    for frm, to, secs in rows:
        at += secs
        print("%-22s %-22s %9.2f %9.2f" % (frm, to, secs, at))
    booted_t = [t for label, t in events(second) if label == "BALENA BOOTED"][0]
    total = booted_t - first.started
    print("%-45s %9.2f" % ("total: power-on -> BALENA BOOTED", total))
    print("per state (sum of its intervals): " + ", ".join(
        "%s %.2fs" % (k[6:], v) for k, v in sums.items()))

    timings, written = migrate_json(first)
    write_s = sums.get("state WRITE", 0.0)
    written = written or raw_b
    print("\nimage: %.0f MiB raw, %.1f MiB compressed (zstd); served %.1f MiB; migrate wrote %.0f MiB"
          % (raw_b / MIB, packed_b / MIB, served / MIB, written / MIB))
    print("write phase (console, state WRITE intervals): %.2fs, %.1f MiB/s" % (
        write_s, written / MIB / write_s))
    if timings:
        print("migrate's own timings (SUCCESS event): %s" % json.dumps(timings, sort_keys=True))
        if timings.get("write_phase_s"):
            print("write phase (migrate's write_phase_s): %.2fs, %.1f MiB/s" % (
                timings["write_phase_s"], written / MIB / timings["write_phase_s"]))
    else:
        print("migrate's own timings: not in its SUCCESS event")
    print("\nratio, emulated (TCG arm64 guest, 1 vCPU, virtio-blk on a file) vs native host pipe, "
          "same .zst, same run: the cost of emulation, not a target")
    print("  write phase (console) / host pipe: %.2fs / %.2fs = %.1fx" % (write_s, pipe_s, write_s / pipe_s))
    if timings and timings.get("write_phase_s"):
        print("  write phase (migrate's write_phase_s) / host pipe: %.2fs / %.2fs = %.1fx" % (
            timings["write_phase_s"], pipe_s, timings["write_phase_s"] / pipe_s))
    print("  whole power-on -> BALENA BOOTED / host pipe: %.1fx" % (total / pipe_s))
    print("\nhost load average (1, 5, 15 min): before %.2f %.2f %.2f, after %.2f %.2f %.2f (%d cores)"
          % (load0 + load1 + (os.cpu_count(),)))


if __name__ == "__main__":
    main()
