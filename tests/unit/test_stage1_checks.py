"""Each diagnostic check's failure, with its message; diagnostic's exit code."""

import json
import os
import shutil

import pytest

import os_fixtures as fx
from conftest import run_migos


@pytest.fixture
def dev(tmp_path):
    root = fx.make_tree(str(tmp_path / "root"), "buster")
    disk = fx.make_disk_image(str(tmp_path / "disk.img"))
    cfg = fx.config_json(str(tmp_path / "config.json"))
    return root, disk, cfg, tmp_path


def diag(root, disk, cfg, *extra):
    r = run_migos("diagnostic", "--root", root, "-c", cfg, "--disk", disk, "--no-api-check",
                  "--no-vpn-check", "--json", "--log-level", "error", *extra)
    data = json.loads(r.stdout) if r.stdout.strip() else None
    return r.returncode, data, r


def status(data, name):
    c = [c for c in data["checks"] if c["check"] == name][0]
    return c["status"], c["msg"]


def test_all_good(dev):
    root, disk, cfg, _ = dev
    rc, data, r = diag(root, disk, cfg)
    assert rc == 0 and data["ok"], r.stdout
    assert data["target_device_type"] == "raspberrypi3"


def test_unsupported_os_and_bypass(dev):
    root, disk, cfg, _ = dev
    with open(os.path.join(root, "etc/os-release"), "w") as f:
        f.write('ID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04"\n')
    rc, data, _ = diag(root, disk, cfg)
    assert rc == 2 and status(data, "os") == ("fail", status(data, "os")[1])
    assert "Ubuntu 22.04 is not a supported OS" in status(data, "os")[1]
    rc, data, _ = diag(root, disk, cfg, "--no-os-check")
    assert rc == 0 and status(data, "os")[0] == "skipped"


def test_unknown_board_and_wrong_device_type(dev):
    root, disk, cfg, tmp = dev
    with open(os.path.join(root, "proc/device-tree/model"), "wb") as f:
        f.write(b"Banana Pi M2\x00")
    rc, data, _ = diag(root, disk, cfg)
    assert rc == 2 and "unknown board 'Banana Pi M2'" in status(data, "board")[1]
    rc, data, _ = diag(root, disk, cfg, "--no-dt-check")
    assert rc == 0
    fx.make_tree(root, "buster")
    cfg5 = fx.config_json(str(tmp / "c5.json"), device_type="raspberrypi5")
    rc, data, _ = diag(root, disk, cfg5)
    st, msg = status(data, "device-type")
    assert rc == 2 and st == "fail" and "raspberrypi5 does not run on Raspberry Pi 3 Model B+" in msg
    rc, data, _ = diag(root, disk, cfg5, "--change-dt-to", "raspberrypi3-64")
    assert rc == 0 and data["target_device_type"] == "raspberrypi3-64"


@pytest.mark.parametrize("layout,msg", [("noobs", "extended partition"), ("gpt", "GPT"),
                                        ("three", "3 partitions")])
def test_unsupported_disk_layouts(dev, layout, msg):
    root, disk, cfg, tmp = dev
    bad = fx.make_disk_image(str(tmp / ("%s.img" % layout)), layout=layout)
    rc, data, _ = diag(root, bad, cfg)
    assert rc == 2 and msg in status(data, "disk")[1]


def test_small_disk_and_early_p1(dev):
    root, disk, cfg, tmp = dev
    small = fx.make_disk_image(str(tmp / "small.img"), size=2 * 1000 ** 3)
    rc, data, _ = diag(root, small, cfg)
    assert rc == 2 and "balenaOS needs at least" in status(data, "disk")[1]
    early = fx.make_disk_image(str(tmp / "early.img"), p1_start=2048)
    rc, data, _ = diag(root, early, cfg)
    assert rc == 2 and "starts at 1024 KiB" in status(data, "disk")[1]
    rc, data, _ = diag(root, str(tmp / "missing.img"), cfg)
    assert rc == 2 and "cannot read" in status(data, "disk")[1]


def test_no_disk_found_for_a_fixture_tree(dev):
    root, disk, cfg, _ = dev
    r = run_migos("diagnostic", "--root", root, "-c", cfg, "--no-api-check", "--no-vpn-check",
                  "--json", "--log-level", "error")
    assert r.returncode == 2
    assert "pass --disk" in status(json.loads(r.stdout), "disk")[1]


def test_low_ram(dev):
    root, disk, cfg, _ = dev
    with open(os.path.join(root, "proc/meminfo"), "w") as f:
        f.write("MemTotal:         200000 kB\n")
    rc, data, _ = diag(root, disk, cfg)
    assert rc == 2 and "195 MiB RAM" in status(data, "ram")[1]


def test_no_boot_partition(dev):
    root, disk, cfg, _ = dev
    shutil.rmtree(os.path.join(root, "boot"))
    rc, data, _ = diag(root, disk, cfg)
    assert rc == 2 and "no Raspberry Pi boot partition" in status(data, "disk")[1]


def test_network_conversion_failure_blocks_until_selected(dev):
    root, disk, cfg, _ = dev
    with open(os.path.join(root, "etc/wpa_supplicant/wpa_supplicant.conf"), "a") as f:
        f.write('network={\n ssid="Enterprise"\n key_mgmt=WPA-EAP\n eap=TLS\n identity="x"\n}\n')
    rc, data, _ = diag(root, disk, cfg)
    st, msg = status(data, "network-config")
    assert rc == 2 and st == "fail" and "Enterprise" in msg and "--wifi" in msg
    rc, data, _ = diag(root, disk, cfg, "--wifi", "Home")
    assert rc == 0
    rc, data, _ = diag(root, disk, cfg, "--no-nwmgr-check")
    assert rc == 0


def test_online_by_wifi_but_no_wifi_kept(dev):
    root, disk, cfg, _ = dev
    rc, data, _ = diag(root, disk, cfg, "--no-wifis")
    assert rc == 2 and "would be offline" in status(data, "network-config")[1]


def test_api_and_vpn_failures_name_the_endpoint(dev):
    root, disk, cfg, _ = dev
    r = run_migos("diagnostic", "--root", root, "-c", cfg, "--disk", disk, "--json",
                  "--check-timeout", "2", "--log-level", "error")
    data = json.loads(r.stdout)
    assert r.returncode == 2
    assert "http://127.0.0.1:9/ping unreachable" in status(data, "api")[1]
    assert "TCP 127.0.0.1:9 unreachable" in status(data, "vpn")[1]


def test_human_report(dev):
    root, disk, cfg, _ = dev
    r = run_migos("diagnostic", "--root", root, "-c", cfg, "--disk", disk, "--no-api-check",
                  "--no-vpn-check", "--log-level", "error")
    assert r.returncode == 0 and "migration may go ahead" in r.stdout
    assert "Raspberry Pi 3 Model B+" in r.stdout
