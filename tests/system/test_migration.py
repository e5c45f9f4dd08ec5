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


def test_whole_migration_boots_balena(tmp_path):
    require_dist()
    work = str(tmp_path)
    image = os.path.join(work, "balena.img")
    make_balena_image(image, "raspberrypi3-64", boot_files=pi.bootable_balena_files(work),
                      boot_mib=48, root_mib=16, state_mib=8, data_mib=8, kernel_mib=0.0625,
                      fill=0.3, random_fraction=0.3)
    packed = compress(image, "zst")
    device_uuid = uuid.uuid4().hex
    config = {"deviceType": "raspberrypi3-64", "applicationId": 1234, "uuid": device_uuid,
              "apiEndpoint": "http://%s:%d" % (pi.GUEST_SERVER, pi.GUEST_PORT),
              "apiKey": secrets.token_hex(16)}
    settings = {"format": 1, "image": {"source": "url", "url": "http://%s:%d/files/balena.img.zst"
                                       % (pi.GUEST_SERVER, pi.GUEST_PORT)},
                "hostname": "pi-fleet-7", "log": {"log_level": "info"}}
    p1 = pi.migos_boot_files()
    p1["migos/migrate.json"] = json.dumps(settings).encode()
    p1["migos/config.json"] = json.dumps(config).encode()
    disk = os.path.join(work, "sd.img")
    make_old_os_disk(disk, size_mib=320, p1_start_mib=4, p1_size_mib=96, p1_files=p1)
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


# Kill points: (state line that arms the kill, extra delay in seconds). The chain below cuts
# power (SIGKILL of qemu) at each one in turn on the same disk; every boot after a cut must
# come up in MIGOS again (or, once switched, in balenaOS) and resume.
KILL_POINTS = [("state WRITE", 0.5), ("state WRITE", 3.0), ("state INJECT", 0.0), ("state INJECT", 0.4),
               ("state CHECK", 0.2), ("state SWITCH", 0.0), ("state PREFLIGHT", 0.3), ("state WRITE", 1.5),
               ("state DRAIN", 0.0), ("state PLAN", 0.1), ("state WRITE", 5.0), ("state SWITCH", 0.05),
               ("state CHECK", 0.0), ("state WRITE", 2.2), ("state INJECT", 0.8), ("MIGOS \\S+ ready", 2.0),
               ("state WRITE", 0.0), ("state WRITE", 4.0), ("state SWITCH", 0.1), ("state DRAIN", 0.1)]


def test_power_cuts_during_a_migration_always_end_in_balena(tmp_path):
    """A chain of power cuts across one migration (MIGOS_POWERCUTS of them, default 20, spread
    over every state, MBR switch and config injection included); the device ends in balenaOS with
    the right config.json, and every boot in between was MIGOS (never a half-written disk)."""
    require_dist()
    cuts = int(os.environ.get("MIGOS_POWERCUTS", "20"))
    work = str(tmp_path)
    image = os.path.join(work, "balena.img")
    make_balena_image(image, "raspberrypi3-64", boot_files=pi.bootable_balena_files(work),
                      boot_mib=48, root_mib=16, state_mib=8, data_mib=8, kernel_mib=0.0625,
                      fill=0.3, random_fraction=0.3)
    packed = compress(image, "zst")
    device_uuid = uuid.uuid4().hex
    config = {"deviceType": "raspberrypi3-64", "applicationId": 1234, "uuid": device_uuid,
              "apiEndpoint": "http://%s:%d" % (pi.GUEST_SERVER, pi.GUEST_PORT), "apiKey": secrets.token_hex(16)}
    settings = {"format": 1, "image": {"source": "url", "url": "http://%s:%d/files/balena.img.zst"
                                       % (pi.GUEST_SERVER, pi.GUEST_PORT)}, "hostname": "pi-cut"}
    p1 = pi.migos_boot_files()
    p1["migos/migrate.json"] = json.dumps(settings).encode()
    p1["migos/config.json"] = json.dumps(config).encode()
    disk = os.path.join(work, "sd.img")
    make_old_os_disk(disk, size_mib=320, p1_start_mib=4, p1_size_mib=96, p1_files=p1)
    outcomes = []
    with BalenaApi(files={"balena.img.zst": packed}) as api:
        port = int(api.url.rsplit(":", 1)[1])
        argv = qemu_virt(bios=UBOOT_QEMU, disk=disk, forward=(pi.GUEST_SERVER, pi.GUEST_PORT, port))
        for i, (arm, delay) in enumerate((KILL_POINTS * 3)[:cuts]):
            m = Machine(argv, os.path.join(work, "cut%02d.log" % i))
            try:
                first = m.expect(r"^MIGOS \S+ ready$|BALENA BOOTED", timeout=180)
                if "BALENA" in first.group(0):
                    outcomes.append((arm, "already balena"))
                    continue
                try:
                    m.expect(arm, timeout=120)
                    time.sleep(delay)
                    outcomes.append((arm, "cut"))
                except AssertionError:
                    # the state did not come (this run resumed past it, or finished): cut anyway
                    outcomes.append((arm, "cut late"))
            finally:
                m.kill()                           # the power cut
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
    assert sum(1 for _, o in outcomes if o.startswith("cut")) >= min(cuts, 10), outcomes
