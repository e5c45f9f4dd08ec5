"""Read keyfiles with NetworkManager's own keyfile reader (libnm's nm_keyfile_read).

Run with the system Python that has PyGObject and gir1.2-nm-1.0 (Debian packages
python3-gi, gir1.2-nm-1.0): ``/usr/bin/python3 tests/nm_oracle.py FILE...``.
Prints one JSON object per file: what NetworkManager understood, or its error.
"""

import json
import os
import sys

import gi

gi.require_version("NM", "1.0")
from gi.repository import GLib, NM  # noqa: E402


def _bytes(b):
    return None if b is None else bytes(b.get_data()).hex()


def read(path):
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


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(json.dumps(read(p)))
