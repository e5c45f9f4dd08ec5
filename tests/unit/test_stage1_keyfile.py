"""GKeyFile escaping and SSID forms (our reader against our writer; NetworkManager's own
reader is checked in test_stage1_netconf.py)."""

from hypothesis import given, strategies as st

from migos.stage1 import keyfile


@given(st.text())
def test_escape_round_trip(s):
    assert keyfile.unescape(keyfile.escape(s)) == s
    assert "\n" not in keyfile.escape(s)


@given(st.binary(min_size=1, max_size=32))
def test_ssid_round_trip(b):
    assert keyfile.decode_ssid(keyfile.ssid_value(b)) == b


def test_ssid_forms():
    assert keyfile.ssid_value(b"Home") == "Home"
    assert keyfile.ssid_value(b"a;b") == "a\\\\;b"
    assert keyfile.ssid_value(b" x ") == "\\sx\\s"
    assert keyfile.ssid_value(b"caf\xc3\xa9") == "99;97;102;195;169;"
    assert keyfile.ssid_value(b"123") == "49;50;51;"
    assert keyfile.escape("a\\b\tc\nd") == "a\\\\b\\tc\\nd"


def test_render_is_grouped_by_section():
    c = keyfile.new_connection("x", "wifi", "s", ssid=b"x")
    c.set("wifi-security", "key-mgmt", "wpa-psk")
    c.set("wifi-security", "psk", "12345678")
    keyfile.finish_ip(c)
    text = keyfile.render(c)
    sections = [ln for ln in text.splitlines() if ln.startswith("[")]
    assert sections == ["[connection]", "[wifi]", "[wifi-security]", "[ipv4]", "[ipv6]"]
