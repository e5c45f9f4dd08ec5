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
