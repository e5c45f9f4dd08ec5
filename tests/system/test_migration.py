"""A whole migration of an emulated device: MIGOS boots from the old boot partition, migrates
the disk from a balenaOS image served by a test server on 127.0.0.1, reboots, and the next
boot runs the (synthetic) balenaOS with the injected config.json.

See emulated_pi.py for the machine (qemu virt + U-Boot as firmware, and why).
Stand-in, said plainly: the old boot partition is filled with the built artefacts and the
settings files `migos init` writes, not by running `migos init` itself (that needs the
old OS's live tree; stage 1's own tests cover it).
"""

import json
import os
import re
import secrets
import time
import uuid

import pytest

from tests.balena_api import BalenaApi
from tests.balena_image import compress, make_balena_image, make_old_os_disk

from . import emulated_pi as pi
from .qemu import UBOOT_QEMU, Machine, qemu_virt, require_dist

pytestmark = pytest.mark.system


def prepare(work, hostname):
    """A bootable synthetic balenaOS image (zstd) and an old-OS disk with MIGOS installed that
    migrates to it from the test server (seen from the guest at GUEST_SERVER). Returns (disk, image, config)."""
    image = os.path.join(work, "balena.img")
    make_balena_image(image, "raspberrypi3-64", boot_files=pi.bootable_balena_files(work),
                      boot_mib=48, root_mib=16, state_mib=8, data_mib=8, kernel_mib=0.0625,
                      fill=0.3, random_fraction=0.3)
    packed = compress(image, "zst")
    config = {"deviceType": "raspberrypi3-64", "applicationId": 1234, "uuid": uuid.uuid4().hex,
              "apiEndpoint": "http://%s:%d" % (pi.GUEST_SERVER, pi.GUEST_PORT),
              "apiKey": secrets.token_hex(16)}
    settings = {"format": 1, "image": {"source": "url", "url": "http://%s:%d/files/balena.img.zst"
                                       % (pi.GUEST_SERVER, pi.GUEST_PORT)},
                "hostname": hostname, "log": {"log_level": "info"}}
    p1 = pi.migos_boot_files()
    p1["migos/migrate.json"] = json.dumps(settings).encode()
    p1["migos/config.json"] = json.dumps(config).encode()
    disk = os.path.join(work, "sd.img")
    make_old_os_disk(disk, size_mib=320, p1_start_mib=4, p1_size_mib=96, p1_files=p1)
    return disk, packed, config


def test_whole_migration_boots_balena(tmp_path):
    require_dist()
    work = str(tmp_path)
    disk, packed, config = prepare(work, "pi-fleet-7")
    device_uuid = config["uuid"]
    with BalenaApi(files={"balena.img.zst": packed}) as api:
        port = int(api.url.rsplit(":", 1)[1])
        argv = qemu_virt(bios=UBOOT_QEMU, disk=disk, forward=(pi.GUEST_SERVER, pi.GUEST_PORT, port))
        first = Machine(argv, os.path.join(work, "boot1.log"))
        try:
            first.expect(r"^MIGOS \S+ ready$", timeout=180)
            first.expect(r'"state": "SUCCESS"', timeout=600)
            assert first.wait_exit(120) == 0
        finally:
            first.kill()
        assert not any(config["apiKey"] in l for l in first.lines), "the API key reached the console"
    second = Machine(argv, os.path.join(work, "boot2.log"))
    try:
        m = second.expect(r"BALENA BOOTED hostname=(\S*) uuid=(\S*)", timeout=180)
        assert m.group(1) == "pi-fleet-7"
        assert m.group(2) == device_uuid
        assert not any(re.match(r"^MIGOS \S+ ready$", l) for l in second.lines)
    finally:
        second.kill()


# Kill points in the order a migration reaches them: (console line that arms the cut, extra delay
# in seconds). The chain cuts power (SIGKILL of qemu) at each in turn on the same disk; every boot
# after a cut must come up in MIGOS again and resume, until a cut after the MBR switch finds
# balenaOS already in place.
KILL_POINTS = [("MIGOS \\S+ ready", 2.0), ("state PREFLIGHT", 0.3), ("state PLAN", 0.1),
               ("state WRITE", 0.5), ("state WRITE", 1.5), ("state WRITE", 3.0), ("state WRITE", 0.0),
               ("state WRITE", 2.2), ("state WRITE", 4.0), ("state WRITE", 5.0),
               ("state INJECT", 0.0), ("state INJECT", 0.4), ("state INJECT", 0.8),
               ("state DRAIN", 0.0), ("state DRAIN", 0.1), ("state CHECK", 0.0), ("state CHECK", 0.2),
               ("state SWITCH", 0.0), ("state SWITCH", 0.05), ("state SWITCH", 0.1)]


STATE_ORDER = ["MIGOS \\S+ ready", "state PREFLIGHT", "state PLAN", "state WRITE", "state INJECT",
               "state DRAIN", "state CHECK", "state SWITCH", "state DONE", '"state": "SUCCESS"']


def kill_points(n):
    """``n`` kill points spread over KILL_POINTS, the first, INJECT and the last SWITCH always in."""
    if n >= len(KILL_POINTS):
        return list(KILL_POINTS)
    must = {0, 10, len(KILL_POINTS) - 3}
    step = (len(KILL_POINTS) - 1) / max(1, n - 1)
    picked = sorted(must | {round(i * step) for i in range(n)})
    while len(picked) > n:
        extra = [i for i in picked if i not in must]
        picked.remove(extra[len(extra) // 2])
    return [KILL_POINTS[i] for i in picked]


def test_power_cuts_during_a_migration_always_end_in_balena(tmp_path):
    """A chain of power cuts across one migration (MIGOS_POWERCUTS of them, spread over every state,
    the config injection and the MBR switch included); the device ends in balenaOS with the right
    config.json, and every boot in between was MIGOS (never a half-written disk). The suite runs 8
    (time budget); MIGOS_POWERCUTS=20 runs the whole list (about 8 minutes)."""
    require_dist()
    cuts = int(os.environ.get("MIGOS_POWERCUTS", "8"))
    disk, packed, config = prepare(str(tmp_path), "pi-cut")
    work, device_uuid = str(tmp_path), config["uuid"]
    outcomes = []
    with BalenaApi(files={"balena.img.zst": packed}) as api:
        port = int(api.url.rsplit(":", 1)[1])
        argv = qemu_virt(bios=UBOOT_QEMU, disk=disk, forward=(pi.GUEST_SERVER, pi.GUEST_PORT, port))
        switched = False
        for i, (arm, delay) in enumerate(kill_points(cuts)):
            m = Machine(argv, os.path.join(work, "cut%02d.log" % i))
            try:
                first = m.expect(r"^MIGOS \S+ ready$|BALENA BOOTED", timeout=180)
                if "BALENA" in first.group(0):
                    # only a cut at or after the MBR switch may leave balenaOS in place
                    assert switched, "balenaOS booted before any cut reached the switch: %s" % outcomes
                    outcomes.append((arm, "already balena"))
                    continue
                # cut at the armed state, or at the first later one when a resumed run skips it
                later = STATE_ORDER[STATE_ORDER.index(arm):]
                hit = first if re.search(arm, first.group(0)) else m.expect("|".join(later), timeout=180)
                if re.search(arm, hit.group(0)):
                    time.sleep(delay)
                    outcomes.append((arm, "cut"))
                else:
                    outcomes.append((arm, "cut at " + hit.group(0)))
            finally:
                m.kill()                           # the power cut
                switched = switched or any("state SWITCH" in l or '"SUCCESS"' in l for l in m.lines)
        final = Machine(argv, os.path.join(work, "final.log"))
        try:
            first = final.expect(r"^MIGOS \S+ ready$|BALENA BOOTED", timeout=180)
            if "BALENA" not in first.group(0):
                final.expect(r'"state": "SUCCESS"', timeout=600)
                assert final.wait_exit(120) == 0
        finally:
            final.kill()
    balena = Machine(argv, os.path.join(work, "balena.log"))
    try:
        m = balena.expect(r"BALENA BOOTED hostname=(\S*) uuid=(\S*)", timeout=180)
        assert (m.group(1), m.group(2)) == ("pi-cut", device_uuid), outcomes
    finally:
        balena.kill()
    assert sum(1 for _, o in outcomes if o.startswith("cut")) >= len(outcomes) - 2, outcomes
