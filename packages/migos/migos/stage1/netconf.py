"""Every network configuration of the old OS, converted to NetworkManager connections.

Sources (all read below ``--root``):

* ``/etc/wpa_supplicant/wpa_supplicant.conf`` and ``wpa_supplicant-*.conf`` (and any
  ``wpa-conf``/``wpa-roam`` file named in /etc/network/interfaces);
* ``/etc/dhcpcd.conf`` static addresses (per interface and per SSID);
* connman services (``/var/lib/connman/*/settings``) and provisioning files (``*.config``);
* existing NetworkManager connections (``/etc/NetworkManager/system-connections``),
  carried over verbatim;
* ``/etc/network/interfaces`` (+ ``source``/``source-directory``).

Nothing is dropped silently: whatever cannot be converted, or converts with a loss, is a
:class:`Problem` (``error``: that network is not carried over; ``warning``: it is, with
the loss described).
"""

import base64
import glob
import ipaddress
import os
import re

from .. import log
from . import keyfile
from .keyfile import finish_ip, new_connection


class Problem:
    def __init__(self, source, msg, severity="error", network=None):
        self.source = source
        self.msg = msg
        self.severity = severity
        self.network = network

    def to_dict(self):
        d = {"source": self.source, "severity": self.severity, "msg": self.msg}
        if self.network is not None:
            d["network"] = self.network
        return d

    def __str__(self):
        return "%s: %s%s" % (self.source, self.msg,
                             "" if self.network is None else " (network %r)" % self.network)


class NetworkConfig:
    """The result: connections, problems, the wifi country and which files were read."""

    def __init__(self):
        self.connections = []
        self.problems = []
        self.country = None
        self.sources = []

    def problem(self, source, msg, severity="error", network=None):
        p = Problem(source, msg, severity, network)
        self.problems.append(p)
        log.event("ERROR" if severity == "error" else "OK", "network: %s" % p,
                  level="warn", severity=severity)

    @property
    def errors(self):
        return [p for p in self.problems if p.severity == "error"]

    def wifi(self):
        return [c for c in self.connections if c.type == "wifi"]

    def to_dict(self):
        return {"connections": [c.summary() for c in self.connections],
                "problems": [p.to_dict() for p in self.problems],
                "country": self.country, "sources": list(self.sources)}


def _rel(root, path):
    return "/" + os.path.relpath(path, root).lstrip("./") if root not in ("", "/") else path


def _read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


# --- wpa_supplicant.conf -----------------------------------------------------------------

def _strip_wpa_comment(line):
    """wpa_supplicant's rule: a '#' after the last double-quote pair starts a comment."""
    first = line.find('"')
    start = 0
    if first >= 0:
        last = line.rfind('"')
        start = last + 1 if last > first else first + 1
    hash_at = line.find("#", start)
    if hash_at >= 0:
        line = line[:hash_at]
    return line.strip()


def _printf_decode(s):
    """Decode a wpa_supplicant P"..." string (printf escapes) to bytes."""
    out = bytearray()
    i = 0
    raw = s.encode("utf-8", "surrogateescape")
    while i < len(raw):
        c = raw[i]
        if c != 0x5c:
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(raw):
            raise ValueError("dangling backslash")
        e = chr(raw[i])
        if e in '\\"':
            out.append(raw[i])
            i += 1
        elif e in "nrte":
            out.append({"n": 10, "r": 13, "t": 9, "e": 27}[e])
            i += 1
        elif e == "x":
            m = re.match(rb"[0-9a-fA-F]{1,2}", raw[i + 1:i + 3])
            if not m:
                raise ValueError("bad \\x escape")
            out.append(int(m.group(0), 16))
            i += 1 + len(m.group(0))
        elif e in "01234567":
            m = re.match(rb"[0-7]{1,3}", raw[i:i + 3])
            out.append(int(m.group(0), 8) & 0xff)
            i += len(m.group(0))
        else:
            raise ValueError("unknown escape \\%s" % e)
    return bytes(out)


def _wpa_value(value):
    """('str', bytes) for "..." and P"..."; ('raw', text) otherwise. ValueError if malformed."""
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            raise ValueError("unterminated quoted value")
        return "str", value[1:-1].encode("utf-8", "surrogateescape")
    if value.startswith('P"'):
        if len(value) < 3 or not value.endswith('"'):
            raise ValueError("unterminated P\"...\" value")
        return "str", _printf_decode(value[2:-1])
    return "raw", value


def parse_wpa_supplicant(text, source):
    """(globals {key: (line, value)}, [network blocks], [(line, problem)]).

    A network block is ``{"_line": n, key: (line, value)}``; values keep their quoting.
    """
    glob_vals, networks, problems = {}, [], []
    block = None
    for n, line in enumerate(text.splitlines(), 1):
        s = _strip_wpa_comment(line.strip()) if not line.strip().startswith("#") else ""
        if not s:
            continue
        if block is None:
            if re.match(r"^network\s*=\s*\{$", s):
                block = {"_line": n}
                continue
            if "=" in s:
                k, _, v = s.partition("=")
                glob_vals[k.strip()] = (n, v.strip())
            else:
                problems.append((n, "cannot parse this line (not key=value, not network={)"))
            continue
        if s == "}":
            networks.append(block)
            block = None
            continue
        if "=" not in s:
            problems.append((n, "cannot parse line inside network block"))
            continue
        k, _, v = s.partition("=")
        block[k.strip()] = (n, v.strip())
    if block is not None:
        problems.append((block["_line"], "network block is never closed with '}'"))
        networks.append(block)
    return glob_vals, networks, problems


_KNOWN_IGNORED = {"id_str", "frequency", "freq_list", "scan_freq", "bgscan", "mesh_fwding"}


def _embed_file(root, path):
    """A file of the old OS as an NM blob value (data:;base64,...), or None if unreadable."""
    full = os.path.join(root, path.lstrip("/"))
    try:
        with open(full, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return "data:;base64," + base64.b64encode(data).decode("ascii")


def wpa_network_to_connection(net, source, root, cfg):
    """Convert one wpa_supplicant network block; report and return None if it cannot be."""
    src = "%s:%d" % (source, net["_line"])

    def val(key):
        return net[key][1] if key in net else None

    # SSID
    raw_ssid = val("ssid")
    if raw_ssid is None:
        cfg.problem(src, "network block has no ssid")
        return None
    try:
        kind, ssid = _wpa_value(raw_ssid)
        if kind == "raw":
            if not re.match(r"^([0-9a-fA-F]{2})+$", ssid):
                raise ValueError("unquoted ssid must be hex")
            ssid = bytes.fromhex(ssid)
    except ValueError as e:
        cfg.problem(src, "ssid: %s" % e)
        return None
    if not 1 <= len(ssid) <= 32:
        cfg.problem(src, "ssid must be 1 to 32 bytes long", network=keyfile.ssid_display(ssid))
        return None
    name = keyfile.ssid_display(ssid)
    conn = new_connection(name, "wifi", src, ssid=ssid)

    def lossy(msg):
        conn.notes.append(msg)
        cfg.problem(src, msg, "warning", network=name)

    # secrets first, so nothing below can log them
    secrets = {}
    for key in ("psk", "sae_password", "password", "private_key_passwd",
                "wep_key0", "wep_key1", "wep_key2", "wep_key3"):
        if key in net:
            try:
                kind, v = _wpa_value(val(key))
            except ValueError as e:
                cfg.problem(src, "%s: %s" % (key, e), network=name)
                return None
            text = v.decode("utf-8", "surrogateescape") if kind == "str" else v
            log.add_secret(text)
            secrets[key] = (kind, text)

    key_mgmt = (val("key_mgmt") or "").upper().split()
    eap = (val("eap") or "").upper().split()

    # autoconnect / priority / hidden / bssid / mode
    if val("disabled") not in (None, "0"):
        conn.set("connection", "autoconnect", "false")
    if val("priority") is not None:
        try:
            prio = int(val("priority"))
        except ValueError:
            cfg.problem(src, "priority %r is not a number" % val("priority"), network=name)
            return None
        if not -999 <= prio <= 999:
            lossy("priority %d clamped to NetworkManager's range -999..999" % prio)
            prio = max(-999, min(999, prio))
        conn.set("connection", "autoconnect-priority", str(prio))
    mode = val("mode")
    if mode in ("1", "2"):
        conn.set("wifi", "mode", "adhoc" if mode == "1" else "ap")
    elif mode not in (None, "0"):
        lossy("mode=%s is not supported; using infrastructure mode" % mode)
    if val("bssid") is not None:
        bssid = val("bssid")
        if not re.match(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$", bssid):
            cfg.problem(src, "bssid %r is not a MAC address" % bssid, network=name)
            return None
        conn.set("wifi", "bssid", bssid.upper())
    if val("scan_ssid") not in (None, "0"):
        conn.set("wifi", "hidden", "true")
    for key in net:
        if key in _KNOWN_IGNORED:
            lossy("%s=%s is not carried over" % (key, val(key)))

    def set_psk():
        kind, psk = secrets.get("psk") or secrets.get("sae_password") or (None, None)
        if psk is None:
            cfg.problem(src, "WPA network without psk", network=name)
            return False
        if kind == "raw":
            if not re.match(r"^[0-9a-fA-F]{64}$", psk):
                cfg.problem(src, "unquoted psk must be 64 hex digits", network=name)
                return False
        elif not 8 <= len(psk.encode("utf-8", "surrogateescape")) <= 63:
            cfg.problem(src, "passphrase must be 8 to 63 characters", network=name)
            return False
        conn.set("wifi-security", "psk", psk)
        return True

    # security
    if any(k in ("WPA-EAP", "WPA-EAP-SHA256", "FT-EAP", "WPA-EAP-SUITE-B", "WPA-EAP-SUITE-B-192",
                 "IEEE8021X") for k in key_mgmt):
        conn.set("wifi-security", "key-mgmt", "ieee8021x" if key_mgmt == ["IEEE8021X"] else "wpa-eap")
        if not _eap(conn, net, val, secrets, src, name, root, cfg, lossy):
            return None
    elif any(k in ("WPA-PSK", "WPA-PSK-SHA256", "FT-PSK") for k in key_mgmt):
        conn.set("wifi-security", "key-mgmt", "wpa-psk")
        if not set_psk():
            return None
        if any(k in ("SAE", "FT-SAE") for k in key_mgmt):
            conn.notes.append("WPA2/WPA3 transition: kept as wpa-psk (connects to both)")
    elif any(k in ("SAE", "FT-SAE") for k in key_mgmt):
        conn.set("wifi-security", "key-mgmt", "sae")
        if not set_psk():
            return None
    elif key_mgmt == ["OWE"]:
        conn.set("wifi-security", "key-mgmt", "owe")
    elif key_mgmt == ["NONE"]:
        weps = [k for k in ("wep_key0", "wep_key1", "wep_key2", "wep_key3") if k in secrets]
        if weps:
            conn.set("wifi-security", "key-mgmt", "none")
            for k in weps:
                kind, v = secrets[k]
                ok = (kind == "str" and len(v) in (5, 13)) or \
                     (kind == "raw" and re.match(r"^([0-9a-fA-F]{10}|[0-9a-fA-F]{26})$", v))
                if not ok:
                    cfg.problem(src, "%s is not a 40/104-bit WEP key" % k, network=name)
                    return None
                conn.set("wifi-security", k.replace("_", "-"), v)
            conn.set("wifi-security", "wep-key-type", "1")
            idx = val("wep_tx_keyidx")
            if idx is not None:
                conn.set("wifi-security", "wep-tx-keyidx", idx)
            if (val("auth_alg") or "").upper() == "SHARED":
                conn.set("wifi-security", "auth-alg", "shared")
        # else: an open network, no [wifi-security] section
    elif not key_mgmt:
        # wpa_supplicant's default is "WPA-PSK WPA-EAP"
        if "psk" in secrets or "sae_password" in secrets:
            conn.set("wifi-security", "key-mgmt", "wpa-psk")
            if not set_psk():
                return None
        elif eap or "identity" in net:
            conn.set("wifi-security", "key-mgmt", "wpa-eap")
            if not _eap(conn, net, val, secrets, src, name, root, cfg, lossy):
                return None
        else:
            cfg.problem(src, "no key_mgmt and no psk: wpa_supplicant itself cannot use this "
                        "network (write key_mgmt=NONE for an open network)", network=name)
            return None
    else:
        cfg.problem(src, "key_mgmt %s is not supported" % " ".join(key_mgmt), network=name)
        return None

    if "wifi-security" in conn.settings:
        for wkey, nkey in (("proto", "proto"), ("pairwise", "pairwise"), ("group", "group")):
            if val(wkey):
                items = [x.lower() for x in val(wkey).split()]
                items = ["rsn" if x == "wpa2" else x for x in items]
                conn.set("wifi-security", nkey, ";".join(items) + ";")
        pmf = val("ieee80211w")
        if pmf in ("0", "1", "2"):
            conn.set("wifi-security", "pmf", str(int(pmf) + 1))
    return finish_ip(conn)


def _eap(conn, net, val, secrets, src, name, root, cfg, lossy):
    methods = [m.lower() for m in (val("eap") or "").upper().split()]
    if not methods:
        cfg.problem(src, "EAP network without eap= method", network=name)
        return False
    unsupported = [m for m in methods if m not in ("peap", "ttls", "tls", "pwd", "leap", "fast")]
    if unsupported:
        cfg.problem(src, "EAP method %s is not supported" % ",".join(unsupported), network=name)
        return False
    conn.set("802-1x", "eap", ";".join(methods) + ";")
    for wkey, nkey in (("identity", "identity"), ("anonymous_identity", "anonymous-identity"),
                       ("domain_suffix_match", "domain-suffix-match")):
        if val(wkey) is not None:
            try:
                _, v = _wpa_value(val(wkey))
            except ValueError as e:
                cfg.problem(src, "%s: %s" % (wkey, e), network=name)
                return False
            conn.set("802-1x", nkey, v if isinstance(v, str) else v.decode("utf-8", "replace"))
    if "password" in secrets:
        kind, pw = secrets["password"]
        if kind == "raw" and pw.startswith("hash:"):
            cfg.problem(src, "password=hash:... (NtPasswordHash) cannot be given to "
                        "NetworkManager", network=name)
            return False
        conn.set("802-1x", "password", pw)
    phase2 = val("phase2")
    if phase2:
        _, p2 = _wpa_value(phase2)
        p2 = p2.decode("utf-8", "replace") if isinstance(p2, bytes) else p2
        for part in p2.split():
            k, _, v = part.partition("=")
            if k == "auth":
                conn.set("802-1x", "phase2-auth", v.lower())
            elif k == "autheap":
                conn.set("802-1x", "phase2-autheap", v.lower())
            else:
                lossy("phase2 %s is not carried over" % part)
    phase1 = val("phase1")
    if phase1:
        _, p1 = _wpa_value(phase1)
        p1 = p1.decode("utf-8", "replace") if isinstance(p1, bytes) else p1
        m = re.search(r"peapver=(\d)", p1)
        if m:
            conn.set("802-1x", "phase1-peapver", m.group(1))
        if re.sub(r"peapver=\d", "", p1).strip():
            lossy("phase1 settings other than peapver are not carried over")
    for wkey, nkey in (("ca_cert", "ca-cert"), ("client_cert", "client-cert"),
                       ("private_key", "private-key")):
        if val(wkey):
            _, path = _wpa_value(val(wkey))
            path = path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path
            blob = _embed_file(root, path)
            if blob is None:
                if wkey == "ca_cert":
                    lossy("ca_cert %s cannot be read; the server certificate will not be "
                          "checked" % path)
                    continue
                cfg.problem(src, "%s %s cannot be read" % (wkey, path), network=name)
                return False
            conn.set("802-1x", nkey, blob)
    if "private_key_passwd" in secrets:
        conn.set("802-1x", "private-key-password", secrets["private_key_passwd"][1])
    if "tls" in methods and not conn.get("802-1x", "private-key"):
        cfg.problem(src, "EAP-TLS without a readable private_key", network=name)
        return False
    if any(m in methods for m in ("peap", "ttls", "pwd", "leap", "fast")) and \
            "password" not in secrets:
        cfg.problem(src, "EAP network without password", network=name)
        return False
    return True


def read_wpa_file(root, path, cfg):
    rel = _rel(root, path)
    try:
        text = _read(path)
    except OSError as e:
        cfg.problem(rel, "cannot read (%s)" % e.strerror)
        return
    cfg.sources.append(rel)
    gvals, networks, problems = parse_wpa_supplicant(text, rel)
    for line, msg in problems:
        cfg.problem("%s:%d" % (rel, line), msg)
    if "country" in gvals:
        country = gvals["country"][1].strip('"').upper()
        if re.match(r"^[A-Z0-9]{2}$", country):
            if cfg.country and cfg.country != country:
                cfg.problem(rel, "country %s differs from %s set elsewhere" % (country, cfg.country),
                            "warning")
            cfg.country = cfg.country or country
        else:
            cfg.problem("%s:%d" % (rel, gvals["country"][0]), "country %r is not a country code"
                        % country, "warning")
    for net in networks:
        conn = wpa_network_to_connection(net, rel, root, cfg)
        if conn is not None:
            cfg.connections.append(conn)


# --- dhcpcd.conf ----------------------------------------------------------------------

class StaticIP:
    def __init__(self, source):
        self.source = source
        self.v4 = []       # "ip/prefix"
        self.v6 = []
        self.gateway = None
        self.gateway6 = None
        self.dns = []
        self.search = []

    def apply(self, conn):
        if self.v4:
            conn.set("ipv4", "method", "manual")
            for i, addr in enumerate(self.v4, 1):
                conn.set("ipv4", "address%d" % i, addr)
            if self.gateway:
                conn.set("ipv4", "gateway", self.gateway)
        v4dns = [d for d in self.dns if ":" not in d]
        v6dns = [d for d in self.dns if ":" in d]
        if v4dns:
            conn.set("ipv4", "dns", ";".join(v4dns) + ";")
        if self.search:
            conn.set("ipv4", "dns-search", ";".join(self.search) + ";")
        if self.v6:
            conn.set("ipv6", "method", "manual")
            for i, addr in enumerate(self.v6, 1):
                conn.set("ipv6", "address%d" % i, addr)
            if self.gateway6:
                conn.set("ipv6", "gateway", self.gateway6)
        if v6dns:
            conn.set("ipv6", "dns", ";".join(v6dns) + ";")
        conn.notes.append("static address from %s" % self.source)
        finish_ip(conn)


def _add_address(static, value, src, cfg, netmask=None):
    try:
        if netmask:
            iface = ipaddress.ip_interface("%s/%s" % (value, netmask))
        else:
            if "/" not in value:
                cfg.problem(src, "address %s has no prefix length; assuming /24" % value, "warning")
                value += "/24"
            iface = ipaddress.ip_interface(value)
    except ValueError:
        cfg.problem(src, "%r is not an IP address" % value)
        return False
    target = static.v6 if iface.version == 6 else static.v4
    target.append(iface.with_prefixlen)
    return True


def parse_dhcpcd(text, source, cfg):
    """{("interface", name) | ("ssid", bytes): StaticIP} from dhcpcd.conf."""
    blocks = {}
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        s = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not s:
            continue
        src = "%s:%d" % (source, n)
        word, _, rest = s.partition(" ")
        rest = rest.strip()
        if word == "interface":
            current = ("interface", rest)
            continue
        if word == "ssid":
            name = rest[1:-1] if len(rest) >= 2 and rest[0] == rest[-1] == '"' else rest
            current = ("ssid", name.encode("utf-8", "surrogateescape"))
            continue
        if word == "profile":
            current = ("profile", rest)
            continue
        if word == "static":
            if current is None:
                cfg.problem(src, "static outside an interface/ssid block applies to every "
                            "interface; not carried over", "warning")
                continue
            key, _, value = rest.partition("=")
            key, value = key.strip(), value.strip().strip('"')
            st = blocks.setdefault(current, StaticIP(src))
            if key in ("ip_address", "ip6_address"):
                for v in value.split():
                    if not _add_address(st, v, src, cfg):
                        blocks.pop(current, None)
            elif key == "routers":
                for v in value.split():
                    (st.__setattr__("gateway6", v) if ":" in v else st.__setattr__("gateway", v))
            elif key == "domain_name_servers":
                st.dns.extend(value.split())
            elif key in ("domain_search", "domain_name"):
                st.search.extend(value.split())
            else:
                cfg.problem(src, "static %s is not carried over" % key, "warning")
            continue
        if word == "fallback" and current and current[0] == "interface":
            cfg.problem(src, "fallback profile %s (used only when DHCP fails) is not carried "
                        "over: NetworkManager has no DHCP fallback" % rest, "warning")
            continue
        if word in ("inform", "arping", "request"):
            cfg.problem(src, "%s is not carried over" % word, "warning")
            continue
    return {k: v for k, v in blocks.items() if k[0] != "profile"}


def apply_dhcpcd(static_blocks, cfg):
    for key, st in static_blocks.items():
        kind, name = key
        if kind == "ssid":
            targets = [c for c in cfg.wifi() if c.ssid == name]
            if not targets:
                cfg.problem(st.source, "static address for SSID %r but that network is not "
                            "configured" % keyfile.ssid_display(name), "warning")
            for c in targets:
                st.apply(c)
        elif name.startswith(("wlan", "wlp", "wlx")):
            targets = [c for c in cfg.wifi() if c.raw is None and
                       not any(k == ("ssid", c.ssid) for k in static_blocks)]
            if not targets:
                cfg.problem(st.source, "static address for %s but no wifi network is "
                            "configured" % name, "warning")
            for c in targets:
                st.apply(c)
        else:
            conn = new_connection("Wired %s (static)" % name, "ethernet", st.source)
            st.apply(conn)
            cfg.connections.append(conn)


# --- /etc/network/interfaces ---------------------------------------------------------------

_STANZA = ("iface", "mapping", "auto", "source", "source-directory", "allow-hotplug",
           "allow-auto", "no-auto-down", "no-scripts", "rename")


def _interfaces_lines(root, path, cfg, seen):
    """(source, line number, text) of an interfaces file with its sourced files."""
    rel = _rel(root, path)
    if path in seen:
        return
    seen.add(path)
    try:
        text = _read(path)
    except OSError as e:
        cfg.problem(rel, "cannot read (%s)" % e.strerror)
        return
    cfg.sources.append(rel)
    joined = text.replace("\\\n", " ")
    for n, line in enumerate(joined.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        word, _, rest = s.partition(" ")
        if word in ("source", "source-directory"):
            pattern = rest.strip()
            base = os.path.dirname(path)
            full = os.path.join(root, pattern.lstrip("/")) if pattern.startswith("/") \
                else os.path.join(base, pattern)
            if word == "source":
                files = sorted(glob.glob(full))
            else:
                files = sorted(f for f in glob.glob(os.path.join(full, "*"))
                               if re.match(r"^[a-zA-Z0-9_-]+$", os.path.basename(f)))
            for f in files:
                for item in _interfaces_lines(root, f, cfg, seen):
                    yield item
            continue
        yield rel, n, s


def parse_interfaces(root, cfg, wpa_files_done):
    path = os.path.join(root, "etc/network/interfaces")
    if not os.path.exists(path):
        return
    stanzas = []
    current = None
    for rel, n, s in _interfaces_lines(root, path, cfg, set()):
        word, _, rest = s.partition(" ")
        if word in _STANZA:
            current = None
            if word == "iface":
                parts = rest.split()
                if len(parts) < 3:
                    cfg.problem("%s:%d" % (rel, n), "iface line needs name, family and method")
                    continue
                current = {"name": parts[0], "family": parts[1], "method": parts[2],
                           "src": "%s:%d" % (rel, n), "opts": []}
                stanzas.append(current)
            continue
        if current is None:
            cfg.problem("%s:%d" % (rel, n), "option outside an iface stanza", "warning")
            continue
        current["opts"].append((n, word, rest.strip()))
    for st in stanzas:
        _interfaces_stanza(st, root, cfg, wpa_files_done)


def _interfaces_stanza(st, root, cfg, wpa_files_done):
    name, family, method, src = st["name"], st["family"], st["method"], st["src"]
    if name == "lo" or method == "loopback":
        return
    opts = {}
    for n, key, value in st["opts"]:
        opts.setdefault(key, []).append(value)
    for key in ("wpa-conf", "wpa-roam"):
        for f in opts.get(key, []):
            full = os.path.join(root, f.lstrip("/"))
            if full not in wpa_files_done:
                wpa_files_done.add(full)
                read_wpa_file(root, full, cfg)
    wifi = None
    if "wpa-ssid" in opts:
        ssid_text = opts["wpa-ssid"][0].strip('"')
        ssid = ssid_text.encode("utf-8", "surrogateescape")
        wifi = new_connection(ssid_text, "wifi", src, ssid=ssid)
        if "wpa-psk" in opts:
            psk = opts["wpa-psk"][0].strip('"')
            log.add_secret(psk)
            if not (8 <= len(psk) <= 63 or re.match(r"^[0-9a-fA-F]{64}$", psk)):
                cfg.problem(src, "wpa-psk is neither an 8..63 character passphrase nor 64 hex "
                            "digits", network=ssid_text)
                return
            wifi.set("wifi-security", "key-mgmt", "wpa-psk")
            wifi.set("wifi-security", "psk", psk)
        if opts.get("wpa-scan-ssid", ["0"])[0] == "1" or opts.get("wireless-essid"):
            wifi.set("wifi", "hidden", "true")
        cfg.connections.append(finish_ip(wifi))
    elif "wireless-essid" in opts:
        cfg.problem(src, "wireless-essid (wireless-tools) networks are not converted", "error",
                    network=opts["wireless-essid"][0])
    if method == "static":
        static = StaticIP(src)
        for value in opts.get("address", []):
            _add_address(static, value, src, cfg, netmask=(opts.get("netmask") or [None])[0]
                         if "/" not in value else None)
        for gw in opts.get("gateway", []):
            if family == "inet6":
                static.gateway6 = gw
            else:
                static.gateway = gw
        for dns in opts.get("dns-nameservers", []):
            static.dns.extend(dns.split())
        for dom in opts.get("dns-search", []):
            static.search.extend(dom.split())
        if not static.v4 and not static.v6:
            cfg.problem(src, "static stanza for %s without a usable address" % name)
            return
        if wifi is not None:
            static.apply(wifi)
        elif name.startswith(("wlan", "wlp", "wlx")):
            targets = [c for c in cfg.wifi() if c.raw is None]
            if not targets:
                cfg.problem(src, "static address for %s but no wifi network is configured" % name,
                            "warning")
            for c in targets:
                static.apply(c)
        else:
            existing = [c for c in cfg.connections if c.type == "ethernet"
                        and c.id == "Wired %s (static)" % name]
            conn = existing[0] if existing else new_connection(
                "Wired %s (static)" % name, "ethernet", src)
            static.apply(conn)
            if not existing:
                cfg.connections.append(conn)
    elif method not in ("dhcp", "manual", "auto", "ppp", "tunnel", "v4tunnel", "6to4"):
        cfg.problem(src, "iface method %s is not converted" % method, "warning")
    elif method in ("ppp", "tunnel", "v4tunnel", "6to4"):
        cfg.problem(src, "%s interface %s is not converted" % (method, name), "warning")


# --- connman --------------------------------------------------------------------------

def _connman_service(root, path, cfg):
    rel = _rel(root, path)
    try:
        sections, problems = keyfile.parse_keyfile(_read(path))
    except OSError as e:
        cfg.problem(rel, "cannot read (%s)" % e.strerror)
        return
    cfg.sources.append(rel)
    for n, msg in problems:
        cfg.problem("%s:%d" % (rel, n), msg)
    for group, values in sections.items():
        v = {k: keyfile.unescape(x) for k, x in values.items()}
        stype = v.get("Type") or group.split("_", 1)[0]
        src = "%s[%s]" % (rel, group)
        if stype == "ethernet":
            if v.get("IPv4.method") == "manual" or v.get("IPv6.method") == "manual":
                conn = new_connection("Wired (connman %s)" % group, "ethernet", src)
                if not _connman_ip(conn, v, src, cfg):
                    continue
                cfg.connections.append(conn)
            continue
        if stype != "wifi":
            cfg.problem(src, "connman %s service not converted" % stype, "warning")
            continue
        parts = group.split("_")
        security = parts[4] if len(parts) >= 5 else None
        if v.get("SSID"):
            try:
                ssid = bytes.fromhex(v["SSID"])
            except ValueError:
                cfg.problem(src, "SSID is not hex")
                continue
        elif len(parts) >= 3 and parts[2] and re.match(r"^([0-9a-fA-F]{2})+$", parts[2]):
            ssid = bytes.fromhex(parts[2])
        elif v.get("Name"):
            ssid = v["Name"].encode("utf-8", "surrogateescape")
        else:
            cfg.problem(src, "wifi service without SSID")
            continue
        name = keyfile.ssid_display(ssid)
        conn = new_connection(name, "wifi", src, ssid=ssid)
        passphrase = v.get("Passphrase")
        if passphrase:
            log.add_secret(passphrase)
        if security in ("psk",) or (security is None and passphrase):
            if not passphrase:
                cfg.problem(src, "psk service without Passphrase", network=name)
                continue
            conn.set("wifi-security", "key-mgmt", "wpa-psk")
            conn.set("wifi-security", "psk", passphrase)
        elif security == "wep":
            conn.set("wifi-security", "key-mgmt", "none")
            conn.set("wifi-security", "wep-key0", passphrase or "")
            conn.set("wifi-security", "wep-key-type", "1")
        elif security not in (None, "none"):
            cfg.problem(src, "connman security %s is not converted" % security, network=name)
            continue
        if v.get("Hidden") == "true":
            conn.set("wifi", "hidden", "true")
        if v.get("AutoConnect") == "false":
            conn.set("connection", "autoconnect", "false")
        if not _connman_ip(conn, v, src, cfg):
            continue
        cfg.connections.append(finish_ip(conn))


def _connman_ip(conn, v, src, cfg):
    static = StaticIP(src)
    if v.get("IPv4.method") == "manual":
        addr, plen = v.get("IPv4.local_address"), v.get("IPv4.netmask_prefixlen")
        if not addr or not plen:
            cfg.problem(src, "manual IPv4 without address or prefix length")
            return False
        if not _add_address(static, "%s/%s" % (addr, plen), src, cfg):
            return False
        static.gateway = v.get("IPv4.gateway")
    if v.get("IPv6.method") == "manual":
        addr, plen = v.get("IPv6.local_address"), v.get("IPv6.prefix_length")
        if addr and plen and _add_address(static, "%s/%s" % (addr, plen), src, cfg):
            static.gateway6 = v.get("IPv6.gateway")
    static.dns = [x for x in v.get("Nameservers", "").split(";") if x]
    static.search = [x for x in v.get("Domains", "").split(";") if x]
    if static.v4 or static.v6 or static.dns:
        static.apply(conn)
    return True


def _connman_provisioning(root, path, cfg):
    rel = _rel(root, path)
    sections, problems = keyfile.parse_keyfile(_read(path))
    cfg.sources.append(rel)
    for n, msg in problems:
        cfg.problem("%s:%d" % (rel, n), msg)
    for group, values in sections.items():
        if not group.startswith("service_"):
            continue
        v = {k: keyfile.unescape(x) for k, x in values.items()}
        src = "%s[%s]" % (rel, group)
        if v.get("Type") != "wifi":
            cfg.problem(src, "connman provisioning of type %s not converted" % v.get("Type"),
                        "warning")
            continue
        if v.get("SSID"):
            ssid = bytes.fromhex(v["SSID"])
        elif v.get("Name"):
            ssid = v["Name"].encode("utf-8", "surrogateescape")
        else:
            cfg.problem(src, "no Name or SSID")
            continue
        name = keyfile.ssid_display(ssid)
        conn = new_connection(name, "wifi", src, ssid=ssid)
        sec = (v.get("Security") or ("psk" if v.get("Passphrase") else "none")).lower()
        if v.get("Passphrase"):
            log.add_secret(v["Passphrase"])
        if sec == "psk":
            conn.set("wifi-security", "key-mgmt", "wpa-psk")
            conn.set("wifi-security", "psk", v.get("Passphrase", ""))
        elif sec != "none":
            cfg.problem(src, "connman Security=%s is not converted" % sec, network=name)
            continue
        if v.get("Hidden") == "true":
            conn.set("wifi", "hidden", "true")
        ipv4 = v.get("IPv4")
        if ipv4 and ipv4 not in ("dhcp", "off"):
            parts = ipv4.split("/")
            static = StaticIP(src)
            if len(parts) < 2 or not _add_address(static, parts[0], src, cfg, netmask=parts[1]):
                cfg.problem(src, "IPv4=%s is not address/netmask[/gateway]" % ipv4, network=name)
                continue
            static.gateway = parts[2] if len(parts) > 2 else None
            static.dns = [x.strip() for x in v.get("Nameservers", "").split(",") if x.strip()]
            static.apply(conn)
        cfg.connections.append(finish_ip(conn))


# --- existing NetworkManager connections ----------------------------------------------------

_BACKUP_SUFFIXES = ("~", ".bak", ".orig", ".rej", ".swp", ".tmp", ".dpkg-old", ".dpkg-dist",
                    ".dpkg-new", ".ucf-old", ".ucf-dist")


def read_nm_file(path, source, cfg):
    try:
        text = _read(path)
    except OSError as e:
        cfg.problem(source, "cannot read (%s)" % e.strerror)
        return None
    sections, problems = keyfile.parse_keyfile(text)
    for n, msg in problems:
        cfg.problem("%s:%d" % (source, n), msg)
    if problems:
        return None
    con = sections.get("connection", {})
    # register every secret before anything can log the file
    for sec in sections.values():
        for k, v in sec.items():
            if k in keyfile.SECRET_KEYS:
                log.add_secret(keyfile.unescape(v))
    if not con.get("id") or not con.get("type"):
        cfg.problem(source, "NetworkManager keyfile without connection id or type")
        return None
    ctype = {"802-11-wireless": "wifi", "802-3-ethernet": "ethernet"}.get(con["type"], con["type"])
    ssid = None
    wifi = sections.get("wifi") or sections.get("802-11-wireless")
    if ctype == "wifi":
        if not wifi or "ssid" not in wifi:
            cfg.problem(source, "wifi keyfile without ssid")
            return None
        ssid = keyfile.decode_ssid(wifi["ssid"])
    conn = keyfile.Connection(keyfile.unescape(con["id"]), ctype, source, ssid=ssid, raw=text,
                              uuid=con.get("uuid"))
    base = os.path.basename(path)
    conn.filename = base if base.endswith(".nmconnection") else base + ".nmconnection"
    return conn


def read_nm_dir(root, cfg):
    d = os.path.join(root, "etc/NetworkManager/system-connections")
    if not os.path.isdir(d):
        return
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        if not os.path.isfile(path) or name.startswith(".") or name.endswith(_BACKUP_SUFFIXES):
            continue
        rel = _rel(root, path)
        cfg.sources.append(rel)
        conn = read_nm_file(path, rel, cfg)
        if conn is not None:
            cfg.connections.append(conn)


# --- the whole thing ------------------------------------------------------------------

def collect(root, wifis=None, no_wifis=False, extra_nm=()):
    """Read every network source under ``root`` and return a :class:`NetworkConfig`.

    ``wifis``: keep only these SSIDs (``--wifi``); ``no_wifis``: keep no wifi network;
    ``extra_nm``: keyfiles to add (``--nwmgr-cfg``).
    """
    cfg = NetworkConfig()
    wpa_done = set()
    wpa_dir = os.path.join(root, "etc/wpa_supplicant")
    files = [os.path.join(wpa_dir, "wpa_supplicant.conf")] + \
        sorted(glob.glob(os.path.join(wpa_dir, "wpa_supplicant-*.conf")))
    for f in files:
        if os.path.isfile(f):
            wpa_done.add(f)
            read_wpa_file(root, f, cfg)
    parse_interfaces(root, cfg, wpa_done)
    cm = os.path.join(root, "var/lib/connman")
    for f in sorted(glob.glob(os.path.join(cm, "*", "settings"))):
        _connman_service(root, f, cfg)
    for f in sorted(glob.glob(os.path.join(cm, "*.config"))):
        _connman_provisioning(root, f, cfg)
    read_nm_dir(root, cfg)
    dhcpcd = os.path.join(root, "etc/dhcpcd.conf")
    if os.path.isfile(dhcpcd):
        rel = _rel(root, dhcpcd)
        cfg.sources.append(rel)
        apply_dhcpcd(parse_dhcpcd(_read(dhcpcd), rel, cfg), cfg)
    for f in extra_nm:
        conn = read_nm_file(f, f, cfg)
        if conn is None:
            continue
        conn.notes.append("added with --nwmgr-cfg")
        cfg.connections.append(conn)
        cfg.sources.append(f)

    # the same wifi network from two sources: keep the first, say so
    seen = {}
    kept = []
    for c in cfg.connections:
        key = (c.type, c.ssid) if c.type == "wifi" else None
        if key and key in seen and c.raw is None:
            cfg.problem(c.source, "network also configured in %s; this copy is not carried over"
                        % seen[key], "warning", network=c.ssid_text)
            continue
        if key:
            seen.setdefault(key, c.source)
        kept.append(c)
    cfg.connections = kept

    if no_wifis:
        dropped = [c for c in cfg.connections if c.type == "wifi"]
        cfg.connections = [c for c in cfg.connections if c.type != "wifi"]
        for c in dropped:
            log.info("--no-wifis: not carrying over %s" % c.ssid_text)
        cfg.problems = [p for p in cfg.problems if p.network is None]
    elif wifis:
        wanted = [w.encode("utf-8", "surrogateescape") for w in wifis]
        have = {c.ssid for c in cfg.connections if c.type == "wifi"}
        for w, raw in zip(wifis, wanted):
            if raw not in have:
                cfg.problem("--wifi", "no configured wifi network has the SSID %r" % w, network=w)
        cfg.connections = [c for c in cfg.connections if c.type != "wifi" or c.ssid in wanted]
        cfg.problems = [p for p in cfg.problems
                        if p.network is None or p.network in wifis or p.source == "--wifi"]
    keyfile.unique_ids(cfg.connections)
    keyfile.assign_filenames(cfg.connections)
    return cfg


def write_keyfiles(cfg, directory):
    """Write one keyfile per connection into ``directory`` (mode 0600); return the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for conn in cfg.connections:
        path = os.path.join(directory, conn.filename)
        data = keyfile.render(conn).encode("utf-8", "surrogateescape")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(path, 0o600)
        paths.append(path)
    return paths
