"""Fixture trees of old OSes (Raspbian buster, Raspberry Pi OS bullseye/bookworm, Debian)
and of the disks under them, generated into a temporary directory.

Every network source stage 1 reads appears in at least one tree:
buster: wpa_supplicant.conf (many kinds of network) + dhcpcd.conf static addresses;
bullseye: wpa_supplicant-wlan0.conf + connman services and a provisioning file;
bookworm: NetworkManager keyfiles, boot partition at /boot/firmware, 64-bit;
debian: /etc/network/interfaces with wpa-ssid/wpa-psk, a static eth0 and a sourced file.
"""

import json
import os
import struct

MODELS = {
    "buster": "Raspberry Pi 3 Model B Plus Rev 1.3",
    "bullseye": "Raspberry Pi Zero 2 W Rev 1.0",
    "bookworm": "Raspberry Pi 4 Model B Rev 1.4",
    "debian": "Raspberry Pi Compute Module 4 Rev 1.0",
}

OS_RELEASE = {
    "buster": 'PRETTY_NAME="Raspbian GNU/Linux 10 (buster)"\nNAME="Raspbian GNU/Linux"\n'
              'VERSION_ID="10"\nVERSION="10 (buster)"\nVERSION_CODENAME=buster\nID=raspbian\n'
              'ID_LIKE=debian\n',
    "bullseye": 'PRETTY_NAME="Raspbian GNU/Linux 11 (bullseye)"\nNAME="Raspbian GNU/Linux"\n'
                'VERSION_ID="11"\nVERSION="11 (bullseye)"\nVERSION_CODENAME=bullseye\nID=raspbian\n'
                'ID_LIKE=debian\n',
    "bookworm": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n',
    "debian": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
              'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n',
}

ARCH_DIR = {"buster": "arm-linux-gnueabihf", "bullseye": "arm-linux-gnueabihf",
            "bookworm": "aarch64-linux-gnu", "debian": "aarch64-linux-gnu"}

# Every secret in the fixtures, so tests can prove none of them is ever logged.
SECRETS = ["buster-home-pass", "p@ss w0rd;#x", "corp-secret-pw", "wpa3-only-secret",
           "bullseye-wlan0-pw", "connman-pass-1", "connman-prov-pw", "bookworm-nm-psk",
           "debian-iface-psk", "roam-net-pass", "APIKEY-0123456789abcdef", "DEVKEY-fedcba9876543210",
           "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]

WPA_BUSTER = r'''ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev
update_config=1
country=GB

network={
	ssid="Home"
	psk="buster-home-pass"   # trailing comment
	key_mgmt=WPA-PSK
	priority=10
}

network={
	ssid="Cafe;Guest \\ net"
	psk="p@ss w0rd;#x"
	scan_ssid=1
	priority=-5
	bssid=02:11:22:33:44:55
}

network={
	ssid=4d7953c3a9736561752d48c3a978
	psk=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
	disabled=1
}

network={
	ssid=P"Tab\there\x01"
	key_mgmt=NONE
}

network={
	ssid="Open Library"
	key_mgmt=NONE
}

network={
	ssid=" Lead space"
	key_mgmt=SAE
	psk="wpa3-only-secret"
	ieee80211w=2
}

network={
	ssid="Corp"
	key_mgmt=WPA-EAP
	eap=PEAP
	identity="alice@example.com"
	password="corp-secret-pw"
	phase2="auth=MSCHAPV2"
}

network={
	ssid="OldWep"
	key_mgmt=NONE
	wep_key0=0102030405
	wep_tx_keyidx=0
}

network={
	ssid="Home"
	psk="buster-home-pass"
}
'''

DHCPCD_BUSTER = '''# A sample configuration for dhcpcd.
hostname
clientid
persistent
option rapid_commit
slaac private

interface eth0
static ip_address=192.168.10.20/24
static routers=192.168.10.1
static domain_name_servers=192.168.10.1 1.1.1.1

ssid Home
static ip_address=10.0.0.50/24
static routers=10.0.0.1
static domain_name_servers=10.0.0.1
'''

WPA_BULLSEYE = '''ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev
country=DE
network={
	ssid="Bullseye Net"
	psk="bullseye-wlan0-pw"
	key_mgmt=WPA-PSK
}
'''

CONNMAN_SERVICE = '''[wifi_b827eb000001_436f6e6e6d616e57696669_managed_psk]
Name=ConnmanWifi
SSID=436f6e6e6d616e57696669
Favorite=true
AutoConnect=true
Modified=2021-05-01T10:00:00.000000Z
Passphrase=connman-pass-1
IPv4.method=manual
IPv4.netmask_prefixlen=24
IPv4.local_address=172.16.0.9
IPv4.gateway=172.16.0.1
IPv6.method=auto
Nameservers=172.16.0.1;
'''

CONNMAN_PROVISION = '''[global]
Name = Provisioning

[service_office]
Type = wifi
Name = Office 5G
Passphrase = connman-prov-pw
Hidden = true
'''

NM_BOOKWORM = '''[connection]
id=preconfigured
uuid=1f6a3c5e-8a4b-4b2e-9f1d-0e6b1e2a3c4d
type=wifi

[wifi]
mode=infrastructure
ssid=BookwormNet

[wifi-security]
key-mgmt=wpa-psk
psk=bookworm-nm-psk

[ipv4]
method=auto

[ipv6]
addr-gen-mode=default
method=auto

[proxy]
'''

NM_BOOKWORM_ETH = '''[connection]
id=Wired connection 1
uuid=2a7b4d6f-9c5d-4c3f-8a2e-1f7c2b3d4e5f
type=ethernet
interface-name=eth0

[ethernet]

[ipv4]
address1=192.168.50.2/24,192.168.50.1
dns=192.168.50.1;
method=manual

[ipv6]
method=auto
'''

INTERFACES_DEBIAN = '''# interfaces(5) file used by ifup(8) and ifdown(8)
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug end0
iface end0 inet static
    address 10.1.2.3
    netmask 255.255.255.0
    gateway 10.1.2.1
    dns-nameservers 10.1.2.1 9.9.9.9
'''

INTERFACES_D_WLAN = '''allow-hotplug wlan0
iface wlan0 inet dhcp
    wpa-ssid "Debian Wifi"
    wpa-psk debian-iface-psk
'''

CONFIG_TXT = '''# For more options and information see
# http://rpf.io/configtxt
# Some settings may impact device functionality. See link above for details

#hdmi_force_hotplug=1
dtparam=audio=on

[pi4]
# Enable DRM VC4 V3D driver on top of the dispmanx display stack
dtoverlay=vc4-fkms-v3d
max_framebuffers=2

[all]
#dtoverlay=vc4-fkms-v3d
enable_uart=0
'''

CONFIG_TXT_64 = '''# bookworm-style config.txt
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
arm_64bit=1
disable_overscan=1

[cm4]
otg_mode=1

[pi4]
arm_boost=1

[all]
'''


def _w(root, rel, data, mode=None):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
    if mode is not None:
        os.chmod(path, mode)
    return path


def zimage():
    head = bytearray(64)
    head[36:40] = b"\x18\x28\x6f\x01"
    return bytes(head) + b"zImage body"


def arm64_image():
    head = bytearray(64)
    head[56:60] = b"ARM\x64"
    return bytes(head) + b"Image body"


def boot_files(kind):
    """{name: bytes} of the boot partition of fixture ``kind``."""
    files = {"bootcode.bin": b"bootcode", "start.elf": b"start", "fixup.dat": b"fixup",
             "start4.elf": b"start4", "fixup4.dat": b"fixup4",
             "bcm2710-rpi-3-b-plus.dtb": b"dtb", "bcm2711-rpi-4-b.dtb": b"dtb4",
             "overlays/vc4-kms-v3d.dtbo": b"ovl", "issue.txt": b"Raspberry Pi reference\n"}
    if kind in ("bookworm", "debian"):
        files["config.txt"] = CONFIG_TXT_64.encode()
        files["kernel8.img"] = arm64_image()
        files["initramfs8"] = b"initramfs"
        files["cmdline.txt"] = b"console=serial0,115200 console=tty1 root=PARTUUID=abcd-02 " \
                               b"rootfstype=ext4 fsck.repair=yes rootwait\n"
    else:
        files["config.txt"] = CONFIG_TXT.encode()
        files["kernel7.img"] = zimage()
        files["kernel7l.img"] = zimage()
        files["kernel.img"] = zimage()
        files["cmdline.txt"] = b"console=serial0,115200 console=tty1 root=PARTUUID=1234-02 " \
                               b"rootfstype=ext4 elevator=deadline fsck.repair=yes rootwait\n"
    if kind == "buster":
        files["boot.scr"] = b"old boot script of the old OS"
    return files


def make_tree(root, kind, boot_dir=None):
    """Write fixture OS ``kind`` under ``root``; the boot partition files go to ``boot_dir``
    (default root/boot or root/boot/firmware) unless it is False. Returns root."""
    _w(root, "etc/os-release", OS_RELEASE[kind])
    _w(root, "proc/device-tree/model", MODELS[kind].encode() + b"\x00")
    _w(root, "proc/meminfo", "MemTotal:         %d kB\nMemFree:  1000 kB\n"
       % (443000 if kind == "bullseye" else 3884000))
    _w(root, "proc/net/route",
       "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
       "%s\t00000000\t0100A8C0\t0003\t0\t0\t303\t00000000\t0\t0\t0\n"
       % ("wlan0" if kind in ("buster", "bullseye") else "eth0"))
    _w(root, "etc/resolv.conf", "nameserver 192.168.0.1\n")
    _w(root, "etc/hostname", {"buster": "kitchen-pi", "bullseye": "zero2",
                              "bookworm": "bookworm-pi", "debian": "cm4-debian"}[kind] + "\n")
    os.makedirs(os.path.join(root, "usr/lib", ARCH_DIR[kind]), exist_ok=True)
    if kind == "buster":
        _w(root, "etc/wpa_supplicant/wpa_supplicant.conf", WPA_BUSTER, 0o600)
        _w(root, "etc/dhcpcd.conf", DHCPCD_BUSTER)
    elif kind == "bullseye":
        _w(root, "etc/wpa_supplicant/wpa_supplicant-wlan0.conf", WPA_BULLSEYE, 0o600)
        _w(root, "var/lib/connman/wifi_b827eb000001_436f6e6e6d616e57696669_managed_psk/settings",
           CONNMAN_SERVICE)
        _w(root, "var/lib/connman/office.config", CONNMAN_PROVISION)
        _w(root, "etc/network/interfaces", "source-directory /etc/network/interfaces.d\n"
           "auto lo\niface lo inet loopback\n")
        _w(root, "etc/network/interfaces.d/wlan1", "allow-hotplug wlan1\niface wlan1 inet manual\n"
           "    wpa-roam /etc/wpa_supplicant/roam.conf\n"
           "iface wlan0 inet manual\n    wpa-conf /etc/wpa_supplicant/wpa_supplicant-wlan0.conf\n")
        _w(root, "etc/wpa_supplicant/roam.conf", 'network={\n ssid="RoamNet"\n psk="roam-net-pass"\n'
           ' id_str="home"\n}\n', 0o600)
    elif kind == "bookworm":
        _w(root, "etc/NetworkManager/system-connections/preconfigured.nmconnection", NM_BOOKWORM,
           0o600)
        _w(root, "etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
           NM_BOOKWORM_ETH, 0o600)
        _w(root, "etc/apt/sources.list.d/raspi.list", "deb http://archive.raspberrypi.com/debian/ "
           "bookworm main\n")
    elif kind == "debian":
        _w(root, "etc/network/interfaces", INTERFACES_DEBIAN)
        _w(root, "etc/network/interfaces.d/wlan0", INTERFACES_D_WLAN, 0o600)
    if boot_dir is not False:
        if boot_dir is None:
            boot_dir = os.path.join(root, "boot/firmware" if kind in ("bookworm", "debian") else "boot")
        for rel, data in boot_files(kind).items():
            _w(boot_dir, rel, data)
        if kind in ("bookworm", "debian"):
            _w(root, "boot/config.txt", "DO NOT EDIT THIS FILE\n\nThe file you are looking for "
               "has moved to /boot/firmware/config.txt\n")
    return root


def make_disk_image(path, size=4 * 1000 ** 3, p1_start=8192, p1_sectors=524288, layout="plain"):
    """A sparse disk image file with an MBR: p1 FAT32 (LBA), p2 Linux (rest of the disk)."""
    sectors = size // 512
    entries = []
    if layout == "plain":
        entries = [(0x0c, p1_start, p1_sectors), (0x83, p1_start + p1_sectors,
                                                   sectors - p1_start - p1_sectors)]
    elif layout == "noobs":
        entries = [(0x0e, 8192, 2000000), (0x05, 2008192, sectors - 2008192)]
    elif layout == "gpt":
        entries = [(0xee, 1, sectors - 1)]
    elif layout == "three":
        entries = [(0x0c, p1_start, p1_sectors), (0x83, p1_start + p1_sectors, 4000000),
                   (0x83, p1_start + p1_sectors + 4000000, 1000000)]
    mbr = bytearray(512)
    for i, (ptype, start, count) in enumerate(entries):
        off = 446 + 16 * i
        mbr[off + 4] = ptype
        mbr[off + 8:off + 16] = struct.pack("<II", start, count)
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as f:
        f.write(mbr)
        f.truncate(size)
    return path


def config_json(path, device_type="raspberrypi3", api="http://127.0.0.1:9", **extra):
    data = {"applicationId": 1234567, "deviceType": device_type, "apiEndpoint": api,
            "apiKey": "APIKEY-0123456789abcdef", "deviceApiKey": "DEVKEY-fedcba9876543210",
            "userId": 42, "vpnEndpoint": "127.0.0.1", "vpnPort": 9, "listenPort": 48484,
            "registryEndpoint": "registry2.balena-cloud.com", "uuid": "0123abcd"}
    data.update(extra)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


# --- NetworkManager's own reading of keyfiles ----------------------------------------------
# Run as ``/usr/bin/python3 tests/os_fixtures.py --nm-read FILE...`` with the system Python
# (Debian packages python3-gi and gir1.2-nm-1.0): libnm's nm_keyfile_read() -- the reader
# the NetworkManager daemon's keyfile plugin uses -- then verify() and verify_secrets().

SYSTEM_PYTHON = "/usr/bin/python3"

def _bytes(b):
    return None if b is None else bytes(b.get_data()).hex()


def _nm_read_one(path):
    import gi
    gi.require_version("NM", "1.0")
    from gi.repository import GLib, NM
    warnings = []

    def handler(kf, conn, htype, hdata, user_data):
        if htype == NM.KeyfileHandlerType.WARN:
            msg, severity = hdata.warn_get()
            warnings.append(msg)
        return False

    kf = GLib.KeyFile()
    try:
        kf.load_from_file(path, GLib.KeyFileFlags.NONE)
        conn = NM.keyfile_read(kf, os.path.dirname(os.path.abspath(path)),
                               NM.KeyfileHandlerFlags.NONE, handler, None)
        conn.normalize()
        conn.verify()
        conn.verify_secrets()
    except GLib.Error as e:
        return {"file": path, "ok": False, "error": e.message, "warnings": warnings}
    out = {"file": path, "ok": True, "warnings": warnings, "id": conn.get_id(),
           "uuid": conn.get_uuid(), "type": conn.get_connection_type()}
    sc = conn.get_setting_connection()
    out["autoconnect"] = sc.get_autoconnect()
    out["autoconnect_priority"] = sc.get_autoconnect_priority()
    w = conn.get_setting_wireless()
    if w is not None:
        out["ssid_hex"] = _bytes(w.get_ssid())
        out["hidden"] = w.get_hidden()
        out["bssid"] = w.get_bssid()
        out["mode"] = w.get_mode()
    s = conn.get_setting_wireless_security()
    if s is not None:
        out["key_mgmt"] = s.get_key_mgmt()
        out["psk"] = s.get_psk()
        out["wep_key0"] = s.get_wep_key(0)
        out["wep_key_type"] = int(s.get_wep_key_type())
        out["pmf"] = int(s.get_pmf())
    x = conn.get_setting_802_1x()
    if x is not None:
        out["eap"] = [x.get_eap_method(i) for i in range(x.get_num_eap_methods())]
        out["identity"] = x.get_identity()
        out["password"] = x.get_password()
        out["phase2_auth"] = x.get_phase2_auth()
        out["ca_cert_scheme"] = int(x.get_ca_cert_scheme())
    for fam, getter in (("ipv4", conn.get_setting_ip4_config), ("ipv6", conn.get_setting_ip6_config)):
        ip = getter()
        if ip is None:
            continue
        out[fam] = {
            "method": ip.get_method(),
            "addresses": ["%s/%d" % (a.get_address(), a.get_prefix()) for a in
                          (ip.get_address(i) for i in range(ip.get_num_addresses()))],
            "gateway": ip.get_gateway(),
            "dns": [ip.get_dns(i) for i in range(ip.get_num_dns())],
            "dns_search": [ip.get_dns_search(i) for i in range(ip.get_num_dns_searches())],
        }
    return out


def nm_available():
    import subprocess
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('NM', '1.0'); "
                            "from gi.repository import NM"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    except OSError:
        return False
    return r.returncode == 0


def nm_read(paths):
    """NetworkManager's reading of each keyfile: a list of dicts (see _nm_read_one)."""
    import subprocess
    r = subprocess.run([SYSTEM_PYTHON, os.path.abspath(__file__), "--nm-read"] + list(paths),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       check=True)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["--nm-read"]:
        for p in sys.argv[2:]:
            print(json.dumps(_nm_read_one(p)))
