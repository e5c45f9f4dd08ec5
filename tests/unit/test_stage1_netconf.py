"""Network configuration -> NetworkManager keyfiles, checked with NetworkManager's own
keyfile reader (libnm, see tests/os_fixtures.py) and not only against our expectations."""

import os
import random

import pytest

import os_fixtures as fx
from migos.stage1 import keyfile, netconf

needs_nm = pytest.mark.skipif(not fx.nm_available(),
                              reason="needs python3-gi and gir1.2-nm-1.0 (NetworkManager's libnm)")


def convert(tmp_path, kind, **kw):
    root = fx.make_tree(str(tmp_path / kind), kind)
    cfg = netconf.collect(root, **kw)
    out = str(tmp_path / (kind + "-out"))
    paths = netconf.write_keyfiles(cfg, out)
    return cfg, paths


def by_ssid(results):
    return {bytes.fromhex(r["ssid_hex"]): r for r in results if r.get("ssid_hex") is not None}


@needs_nm
@pytest.mark.parametrize("kind", sorted(fx.MODELS))
def test_every_keyfile_is_read_by_networkmanager(tmp_path, kind):
    cfg, paths = convert(tmp_path, kind)
    assert paths, "no connection converted from %s" % kind
    assert len(set(p.lower() for p in paths)) == len(paths)
    results = fx.nm_read(paths)
    for r in results:
        assert r["ok"], r
        assert r["warnings"] == [], r
    for p in paths:
        assert os.stat(p).st_mode & 0o777 == 0o600
    # what NM understood is what the old OS had: ids/uuids as we wrote them
    assert sorted(r["uuid"] for r in results) == sorted(c.uuid for c in cfg.connections)


@needs_nm
def test_buster_wpa_supplicant_networks(tmp_path):
    cfg, paths = convert(tmp_path, "buster")
    nm = by_ssid(fx.nm_read(paths))
    home = nm[b"Home"]
    assert home["key_mgmt"] == "wpa-psk" and home["psk"] == "buster-home-pass"
    assert home["autoconnect_priority"] == 10 and home["hidden"] is False
    # dhcpcd.conf "ssid Home" static address lands on that network only
    assert home["ipv4"]["method"] == "manual"
    assert home["ipv4"]["addresses"] == ["10.0.0.50/24"]
    assert home["ipv4"]["gateway"] == "10.0.0.1" and home["ipv4"]["dns"] == ["10.0.0.1"]

    cafe = nm[b"Cafe;Guest \\\\ net"]
    assert cafe["psk"] == "p@ss w0rd;#x"
    assert cafe["hidden"] is True and cafe["autoconnect_priority"] == -5
    assert cafe["bssid"] == "02:11:22:33:44:55"
    assert cafe["ipv4"]["method"] == "auto"

    hexnet = nm["MyS\u00e9seau-H\u00e9x".encode("utf-8")]      # unquoted hex SSID, UTF-8
    assert hexnet["autoconnect"] is False
    assert hexnet["psk"] == "0123456789abcdef" * 4

    tab = nm[b"Tab\there\x01"]          # P"..." printf escapes, non-printable byte
    assert "key_mgmt" not in tab        # open network: no security section
    assert nm[b"Open Library"].get("key_mgmt") is None

    sae = nm[b" Lead space"]
    assert sae["key_mgmt"] == "sae" and sae["psk"] == "wpa3-only-secret"
    assert sae["pmf"] == 3              # ieee80211w=2 -> required

    corp = nm[b"Corp"]
    assert corp["key_mgmt"] == "wpa-eap" and corp["eap"] == ["peap"]
    assert corp["identity"] == "alice@example.com" and corp["password"] == "corp-secret-pw"
    assert corp["phase2_auth"] == "mschapv2"

    wep = nm[b"OldWep"]
    assert wep["key_mgmt"] == "none" and wep["wep_key0"] == "0102030405"

    # the duplicated "Home" block is reported, not written twice
    assert sum(1 for c in cfg.connections if c.ssid == b"Home") == 1
    assert any("also configured" in p.msg for p in cfg.problems)
    # static eth0 from dhcpcd.conf
    eth = [r for r in fx.nm_read(paths) if r["type"] == "802-3-ethernet"]
    assert len(eth) == 1 and eth[0]["ipv4"]["addresses"] == ["192.168.10.20/24"]
    assert eth[0]["ipv4"]["dns"] == ["192.168.10.1", "1.1.1.1"]
    assert cfg.country == "GB"
    # only scan_ssid=1 networks are hidden
    assert [s for s, r in nm.items() if r["hidden"]] == [b"Cafe;Guest \\\\ net"]


@needs_nm
def test_bullseye_wlan0_conf_and_connman(tmp_path):
    cfg, paths = convert(tmp_path, "bullseye")
    nm = by_ssid(fx.nm_read(paths))
    assert nm[b"Bullseye Net"]["psk"] == "bullseye-wlan0-pw"      # wpa_supplicant-wlan0.conf
    cm = nm[b"ConnmanWifi"]
    assert cm["psk"] == "connman-pass-1"
    assert cm["ipv4"]["addresses"] == ["172.16.0.9/24"] and cm["ipv4"]["gateway"] == "172.16.0.1"
    office = nm[b"Office 5G"]
    assert office["psk"] == "connman-prov-pw" and office["hidden"] is True
    assert cfg.country == "DE"
    # wpa-roam file named in /etc/network/interfaces.d (source-directory); the wlan0 file
    # named there too is read once only
    assert nm[b"RoamNet"]["psk"] == "roam-net-pass"
    assert sum(1 for c in cfg.connections if c.ssid == b"Bullseye Net") == 1
    assert any("id_str" in p.msg for p in cfg.problems)


def test_dhcpcd_interface_static_applies_to_every_wifi(tmp_path):
    root = str(tmp_path)
    fx._w(root, "etc/wpa_supplicant/wpa_supplicant.conf",
          'network={\n ssid="A"\n psk="aaaaaaaa"\n}\nnetwork={\n ssid="B"\n psk="bbbbbbbb"\n}\n')
    fx._w(root, "etc/dhcpcd.conf", "interface wlan0\nstatic ip_address=10.9.8.7/16\n"
          "static routers=10.9.0.1\nstatic domain_name_servers=10.9.0.1 fd00::1\n"
          "fallback static_eth0\n\nssid B\nstatic ip_address=10.1.1.1\n")
    cfg = netconf.collect(root)
    a = [c for c in cfg.connections if c.ssid == b"A"][0]
    b = [c for c in cfg.connections if c.ssid == b"B"][0]
    assert a.get("ipv4", "address1") == "10.9.8.7/16" and a.get("ipv4", "gateway") == "10.9.0.1"
    assert a.get("ipv4", "dns") == "10.9.0.1;" and a.get("ipv6", "dns") == "fd00::1;"
    assert b.get("ipv4", "address1") == "10.1.1.1/24"
    msgs = [p.msg for p in cfg.problems]
    assert any("no prefix length" in m for m in msgs)
    assert any("fallback profile" in m for m in msgs)


@needs_nm
def test_bookworm_networkmanager_files_carried_verbatim(tmp_path):
    cfg, paths = convert(tmp_path, "bookworm")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["Wired_connection_1.nmconnection", "preconfigured.nmconnection"]
    with open(os.path.join(os.path.dirname(paths[0]), "preconfigured.nmconnection")) as f:
        assert f.read() == fx.NM_BOOKWORM
    nm = fx.nm_read(paths)
    assert {r["id"] for r in nm} == {"preconfigured", "Wired connection 1"}


@needs_nm
def test_debian_interfaces(tmp_path):
    cfg, paths = convert(tmp_path, "debian")
    results = fx.nm_read(paths)
    wifi = [r for r in results if r["type"] == "802-11-wireless"]
    eth = [r for r in results if r["type"] == "802-3-ethernet"]
    assert wifi[0]["ssid_hex"] == b"Debian Wifi".hex() and wifi[0]["psk"] == "debian-iface-psk"
    assert eth[0]["ipv4"]["addresses"] == ["10.1.2.3/24"]
    assert eth[0]["ipv4"]["dns"] == ["10.1.2.1", "9.9.9.9"]


TRICKY = [b"plain", b"semi;colon", b"back\\slash", b" lead", b"trail ", b"  both  ",
          b"new\nline", b"caf\xc3\xa9", b"\xff\xfe\x00raw", b"12345", b"1;2;3;", b"#hash",
          b"[section]", b"a=b", b"\t", b"x" * 32, b"\"quoted\"", b"\\;", b";"]


@needs_nm
def test_tricky_ssids_and_ids_round_trip_through_networkmanager(tmp_path):
    rng = random.Random(os.urandom(8))
    ssids = list(TRICKY) + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 33)))
                            for _ in range(20)]
    conns = []
    for i, s in enumerate(ssids):
        c = keyfile.new_connection(keyfile.ssid_display(s), "wifi", "test:%d" % i, ssid=s)
        c.set("wifi-security", "key-mgmt", "wpa-psk")
        psk = "".join(rng.choice(" !\"#;\\=[]abcXYZ019") for _ in range(rng.randrange(8, 64)))
        c.set("wifi-security", "psk", psk)
        keyfile.finish_ip(c)
        conns.append((c, psk))
    keyfile.unique_ids([c for c, _ in conns])
    keyfile.assign_filenames([c for c, _ in conns])
    paths = []
    for c, _ in conns:
        p = str(tmp_path / c.filename)
        with open(p, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(keyfile.render(c))
        paths.append(p)
    assert len({p.lower() for p in paths}) == len(paths)
    for (c, psk), r in zip(conns, fx.nm_read(paths)):
        assert r["ok"], (c.ssid, r)
        assert bytes.fromhex(r["ssid_hex"]) == c.ssid
        assert r["psk"] == psk
        assert r["id"] == c.id


def test_parser_keeps_what_takeover_dropped():
    text = '''network={
  ssid="has \\"quote\\" inside" # comment after the value
  psk="pw with # hash"
  priority=3 # trailing comment
}
'''
    g, nets, problems = netconf.parse_wpa_supplicant(text, "x")
    assert problems == []
    assert nets[0]["ssid"][1] == '"has \\"quote\\" inside"'
    assert nets[0]["psk"][1] == '"pw with # hash"'
    assert nets[0]["priority"][1] == "3"


def test_unparseable_input_is_reported_not_dropped(tmp_path):
    root = str(tmp_path)
    fx._w(root, "etc/wpa_supplicant/wpa_supplicant.conf", '''network={
  ssid="NoKeyMgmt"
}
network={
  ssid="TooShort"
  psk="short"
}
network={
  ssid="TLS"
  key_mgmt=WPA-EAP
  eap=TLS
  identity="x"
  private_key="/nonexistent.pem"
}
network={
  ssid="Broken
  psk="whatever1"
}
network={
  ssid="Unclosed"
  psk="unclosed-pw"
''')
    cfg = netconf.collect(root)
    msgs = [str(p) for p in cfg.errors]
    assert any("NoKeyMgmt" in m for m in msgs)
    assert any("TooShort" in m and "8 to 63" in m for m in msgs)
    assert any("TLS" in m and "private_key" in m for m in msgs)
    assert any("never closed" in m for m in msgs)
    assert any("ssid" in m and "unterminated" in m for m in msgs)
    # --wifi narrows both the networks and the problems that matter
    cfg2 = netconf.collect(root, wifis=["Unclosed"])
    assert [c.ssid for c in cfg2.connections] == [b"Unclosed"]
    cfg3 = netconf.collect(root, wifis=["Nope"])
    assert any("no configured wifi network" in str(p) for p in cfg3.errors)
    cfg4 = netconf.collect(root, no_wifis=True)
    assert cfg4.connections == [] and not any(p.network for p in cfg4.problems)


def test_same_name_networks_get_distinct_files():
    conns = [keyfile.new_connection("Home", "wifi", "a:%d" % i, ssid=s)
             for i, s in enumerate([b"Home", b"home", b"HOME", b"Home!"])]
    keyfile.unique_ids(conns)
    keyfile.assign_filenames(conns)
    names = [c.filename for c in conns]
    assert len({n.lower() for n in names}) == 4
    assert len({c.id for c in conns}) == 4


def test_nwmgr_cfg_adds_a_keyfile(tmp_path):
    root = fx.make_tree(str(tmp_path / "b"), "buster")
    extra = str(tmp_path / "extra.nmconnection")
    with open(extra, "w") as f:
        f.write(fx.NM_BOOKWORM)
    cfg = netconf.collect(root, no_wifis=False, extra_nm=[extra])
    assert any(c.raw == fx.NM_BOOKWORM for c in cfg.connections)
