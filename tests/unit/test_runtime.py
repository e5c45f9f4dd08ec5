"""Unit tests of the MIGOS runtime's decisions and of finding the boot disk (no root)."""

import json
import os
import subprocess

import pytest

from migos.runtime import bootdisk, plan
from migos.runtime.watchdog import Watchdog


def test_exit_codes_mean_done_give_back_wait_or_retry():
    assert plan.outcome(0) == plan.DONE
    assert plan.outcome(2) == plan.GIVE_BACK       # bad input, nothing written: old OS back
    assert plan.outcome(3) == plan.WAIT            # source unreachable, nothing written
    for rc in (1, 137, -9):
        assert plan.outcome(rc) == plan.RETRY      # maybe written: only forward


def test_next_step_only_forward_once_touched_and_patience_for_the_network():
    # an untouched disk: bad input gives back at once, an unreachable source after patience
    assert plan.next_step(plan.GIVE_BACK, False, 0, 1800) == plan.GIVE_BACK
    assert plan.next_step(plan.WAIT, False, 0, 1800) == plan.WAIT
    assert plan.next_step(plan.WAIT, False, 1799, 1800) == plan.WAIT
    assert plan.next_step(plan.WAIT, False, 1800, 1800) == plan.GIVE_BACK
    assert plan.next_step(plan.RETRY, False, 0, 1800) == plan.RETRY
    # a disk a migration wrote to: never back, whatever migrate said
    for what in (plan.GIVE_BACK, plan.WAIT, plan.RETRY):
        assert plan.next_step(what, True, 99999, 1800) == plan.RETRY
    assert plan.next_step(plan.DONE, True, 0, 1800) == plan.DONE


def test_kernel_command_line_options():
    opts = plan.cmdline_options("console=ttyAMA0 migos.stall=30 migos.fault=hang:WRITE "
                                "migos.patience=x migos.noop quiet")
    assert opts == {"stall": 30, "fault": "hang:WRITE"}
    assert plan.cmdline_options("root=/dev/sda migos.patience=600") == {"patience": 600}


def test_migrate_logs_at_least_info_inside_migos():
    # progress events feed the watchdog: a quieter level would starve it
    assert [plan.pipe_level(l) for l in ("debug", "info", "warn", "error", None, "bogus")] == \
        ["debug", "info", "info", "info", "info", "info"]


def test_backoff_doubles_and_caps():
    assert [plan.backoff(n) for n in (1, 2, 3, 4, 5, 6, 9)] == [10, 20, 40, 80, 160, 300, 300]


def test_wired_interface_choice():
    assert plan.wired_interface(["lo", "wlan0", "usb0", "eth1", "eth0"]) == "eth0"
    assert plan.wired_interface(["lo", "enxb827eb000001"]) == "enxb827eb000001"
    assert plan.wired_interface(["lo", "wlan0"]) is None


def test_migrate_argv_per_source():
    files = {"config.json": "/run/migos/config.json", "system-connections": ["/run/migos/s/a.nmconnection"]}
    url = plan.migrate_argv("/dev/mmcblk0", {"image": {"source": "url", "url": "http://x/i.img.gz"},
                                             "hostname": "pi-7", "log": {"log_level": "debug"}}, files)
    assert url == ["migrate", "--device", "/dev/mmcblk0", "-c", "/run/migos/config.json", "--image",
                   "http://x/i.img.gz", "--nwmgr-cfg", "/run/migos/s/a.nmconnection", "--hostname", "pi-7",
                   "--log-level", "debug"]
    assert plan.migrate_argv("/dev/vda", {"image": {"source": "url", "url": "u"},
                                          "log": {"log_level": "warn"}}, files)[-2:] == ["--log-level", "info"]
    api = plan.migrate_argv("/dev/vda", {"image": {"source": "api", "version": "2.50.1+rev1"}}, files)
    assert api[api.index("--version") + 1] == "2.50.1+rev1"
    with pytest.raises(ValueError, match="no image source"):
        plan.migrate_argv("/dev/vda", {"image": {}}, files)


def test_static_ipv4_from_keyfile():
    text = "[connection]\nid=eth\ntype=ethernet\n[ipv4]\nmethod=manual\naddress1=192.0.2.7/24,192.0.2.1\ndns=192.0.2.53;\n"
    assert plan.is_wired_keyfile(text)
    assert plan.static_ipv4(text) == ("192.0.2.7/24", "192.0.2.1", ["192.0.2.53"])
    assert plan.static_ipv4(text.replace("manual", "auto")) is None


def test_first_fat_partition():
    mbr = bytearray(512)
    mbr[510:512] = b"\x55\xaa"
    mbr[446 + 4] = 0x83
    mbr[446 + 8:446 + 16] = (2048).to_bytes(4, "little") + (100).to_bytes(4, "little")
    mbr[462 + 4] = 0x0c
    mbr[462 + 8:462 + 16] = (8192).to_bytes(4, "little") + (4096).to_bytes(4, "little")
    assert bootdisk.first_fat_partition(bytes(mbr)) == (8192 * 512, 4096 * 512)
    assert bootdisk.first_fat_partition(bytes(512)) is None


def _disk(path, files):
    with open(path, "wb") as f:
        f.truncate(48 << 20)
    subprocess.run(["sfdisk", "-q", str(path)], input="label: dos\nstart=4MiB, type=c\n", text=True, check=True)
    subprocess.run(["mkfs.vfat", "-F", "32", "--offset=8192", str(path), str((44 << 20) // 1024)],
                   check=True, capture_output=True)
    img = "%s@@%d" % (path, 4 << 20)
    subprocess.run(["mmd", "-i", img, "::migos", "::migos/system-connections"], check=True)
    for name, data in files.items():
        tmp = str(path) + ".f"
        with open(tmp, "wb") as f:
            f.write(data)
        subprocess.run(["mcopy", "-i", img, tmp, "::" + name], check=True)


def test_boot_disk_found_and_read_without_mounting(tmp_path):
    settings = {"image": {"source": "url", "url": "http://127.0.0.1:8080/balena.img.zst"}, "hostname": "pi-7"}
    _disk(tmp_path / "a.img", {"readme.txt": b"not this one"})
    b = tmp_path / "b.img"
    _disk(b, {"migos/migrate.json": json.dumps(settings).encode(), "migos/config.json": b'{"uuid": "x"}',
              "migos/system-connections/Home WiFi.nmconnection": b"[connection]\nid=Home WiFi\n"})
    assert bootdisk.open_disk(str(tmp_path / "a.img")) is None
    disk = bootdisk.find([str(tmp_path / "a.img"), str(b), str(tmp_path / "missing")])
    assert disk is not None and disk.device == str(b)
    from migos.runtime.main import read_settings
    got, files, keyfiles = read_settings(disk, dest=str(tmp_path / "run"))
    assert got == settings
    assert open(files["config.json"], "rb").read() == b'{"uuid": "x"}'
    assert list(keyfiles) == ["Home WiFi.nmconnection"]
    assert os.stat(files["system-connections"][0]).st_mode & 0o777 == 0o600
    disk.close()


def test_watchdog_stops_feeding_after_a_stall(tmp_path):
    now = [0.0]
    rebooted = []
    wd = Watchdog(path=str(tmp_path / "no-watchdog"), stall=60, reboot=lambda: rebooted.append(1),
                  clock=lambda: now[0])
    wd.progress()
    now[0] = 59
    assert not wd.stalled()
    wd.progress()
    now[0] = 118
    assert not wd.stalled()
    now[0] = 121
    assert wd.stalled()


def test_full_log_kept_on_the_old_boot_fat_without_mounting(tmp_path):
    """save_to_old_boot writes the RAM log into the FAT at a byte offset of a disk (mtools),
    replacing an older copy; the FAT stays consistent (fsck.fat)."""
    from migos.runtime import logsinks
    disk = str(tmp_path / "disk.img")
    with open(disk, "wb") as f:
        f.truncate(40 << 20)
    offset = 4 << 20
    subprocess.run(["mkfs.vfat", "--offset=%d" % (offset // 512), disk, str(32 * 1024)],
                   check=True, capture_output=True)
    for lines in (["old"], ['{"state": "SUCCESS", "msg": "line %d"}' % i for i in range(3000)]):
        assert logsinks.save_to_old_boot(disk, offset, lines)
    out = subprocess.run(["mtype", "-i", "%s@@%d" % (disk, offset), "::" + logsinks.LOG_NAME],
                         check=True, capture_output=True, text=True).stdout
    assert out.splitlines()[0] == '{"state": "SUCCESS", "msg": "line 0"}' and len(out.splitlines()) == 3000
    part = str(tmp_path / "p1.img")
    with open(disk, "rb") as f, open(part, "wb") as g:
        f.seek(offset)
        g.write(f.read())
    assert subprocess.run(["fsck.fat", "-n", part], capture_output=True).returncode == 0
    # a disk without a FAT there: a logged error, not an exception
    assert logsinks.save_to_old_boot(disk, 1 << 20, ["x"]) is False


WIFI_KEYFILE = """[connection]
id=home
type=wifi

[wifi]
ssid=Home Net
hidden=true

[wifi-security]
key-mgmt=wpa-psk
psk=pass "with" quotes

[ipv4]
method=auto
"""


def test_wifi_networks_from_keyfiles_and_wpa_supplicant_conf():
    files = {"b-home.nmconnection": WIFI_KEYFILE,
             "a-cafe.nmconnection": "[connection]\ntype=wifi\n[wifi]\nssid=99;97;102;233;\n",
             "c-corp.nmconnection": "[connection]\ntype=wifi\n[wifi]\nssid=Corp\n[wifi-security]\n"
                                    "key-mgmt=wpa-eap\n[802-1x]\neap=peap;\n",
             "d-wpa3.nmconnection": "[connection]\ntype=wifi\n[wifi]\nssid=W3\n[wifi-security]\n"
                                    "key-mgmt=sae\npsk=sae-secret-1\n",
             "wired.nmconnection": "[connection]\ntype=ethernet\n[ipv4]\nmethod=auto\n"}
    nets = plan.wifi_networks(files)
    assert [(n[0], n[1], n[3], n[4]) for n in nets] == [
        ("a-cafe.nmconnection", b"caf\xe9", "NONE", False),     # byte-list SSID, open
        ("b-home.nmconnection", b"Home Net", "WPA-PSK", True),
        ("d-wpa3.nmconnection", b"W3", "SAE", False)]           # 802.1X skipped
    conf = plan.wpa_conf(nets, "DE")
    assert "country=DE" in conf
    blocks = conf.split("network={")[1:]
    assert "ssid=636166e9" in blocks[0] and "key_mgmt=NONE" in blocks[0] and "priority=3" in blocks[0]
    assert 'ssid="Home Net"' in blocks[1] and 'psk="pass "with" quotes"' in blocks[1]
    assert "scan_ssid=1" in blocks[1] and "priority=2" in blocks[1]
    assert 'sae_password="sae-secret-1"' in blocks[2] and "ieee80211w=2" in blocks[2]
    assert plan.wpa_conf(nets, "not a country").count("country=") == 0
    assert plan.wireless_interface(["lo", "eth0", "wlan1", "wlan0"]) == "wlan0"
    assert plan.wireless_interface(["lo", "eth0"]) is None


def test_wpa_supplicant_itself_accepts_the_conf(tmp_path):
    """The generated wpa_supplicant.conf read by the real wpa_supplicant (the host's, with the
    'none' driver on lo: it parses the configuration, then fails to scan, which is fine)."""
    import shutil
    exe = shutil.which("wpa_supplicant") or "/usr/sbin/wpa_supplicant"
    if not os.path.exists(exe):
        pytest.fail("wpa_supplicant is not installed (scripts/setup.sh installs wpasupplicant)")
    nets = plan.wifi_networks({"b.nmconnection": WIFI_KEYFILE,
                               "a.nmconnection": "[connection]\ntype=wifi\n[wifi]\nssid=99;97;102;233;\n",
                               "d.nmconnection": "[connection]\ntype=wifi\n[wifi]\nssid=W3\n"
                                                 "[wifi-security]\nkey-mgmt=sae\npsk=sae-secret-1\n"})
    good = plan.wpa_conf(nets, "DE").replace("ctrl_interface=/run/wpa_supplicant",
                                            "ctrl_interface=%s" % (tmp_path / "ctl"))
    bad = good.replace('psk="pass "with" quotes"', "psk=short")

    def parse(text):
        conf = tmp_path / "wpa.conf"
        conf.write_text(text)
        try:
            out = subprocess.run([exe, "-D", "none", "-i", "lo", "-c", str(conf)], capture_output=True,
                                 text=True, timeout=3).stdout
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return out
    assert "Successfully initialized" in parse(good)
    assert "Failed to read or parse configuration" in parse(bad)
