"""Pure decisions of the runtime (unit-tested without a device)."""

import re

WIRED = re.compile(r"^(eth|end|enx|usb)\w*$")

# migrate's exit codes (stage 2): 0 done, 2 bad input with nothing written, 3 image source
# unreachable with nothing written, else resumable
DONE, RETRY, GIVE_BACK, WAIT = "done", "retry", "give-back", "wait"
LEVELS = ("debug", "info", "warn", "error")

PATIENCE = 1800           # seconds an unreachable image source is retried before giving back
STALL = 180               # seconds without a migration event before the watchdog resets


def outcome(exit_code):
    """What an exit code of ``migos migrate`` means for the runtime."""
    if exit_code == 0:
        return DONE
    if exit_code == 2:
        return GIVE_BACK          # nothing was written: restore-boot, back to the old OS
    if exit_code == 3:
        return WAIT               # nothing was written, the source may come back: try again
    return RETRY                  # something may be written: only forward, resume


def next_step(what, touched, waited, patience):
    """The runtime's move after migrate ended with ``outcome`` ``what``.

    ``touched``: a migration already wrote to the disk (then only forward: RETRY, whatever
    migrate said); ``waited``: seconds since the source first proved unreachable."""
    if what == DONE:
        return DONE
    if touched:
        return RETRY
    if what == WAIT:
        return GIVE_BACK if waited >= patience else WAIT
    return what


def cmdline_options(text):
    """MIGOS options from the kernel command line (``migos.KEY=VALUE``; bare ``migos.KEY`` is
    "1"). ``stall`` (watchdog, seconds), ``patience`` (seconds), ``fault`` (test fault
    injection, passed to migrate as MIGOS_FAULT)."""
    opts = {}
    for word in text.split():
        if word.startswith("migos."):
            key, _, value = word[len("migos."):].partition("=")
            opts[key] = value or "1"
    out = {}
    for key in ("stall", "patience"):
        if opts.get(key, "").isdigit() and int(opts[key]) > 0:
            out[key] = int(opts[key])
    if opts.get("fault"):
        out["fault"] = opts["fault"]
    return out


def pipe_level(configured):
    """Level migrate logs at inside MIGOS: the configured one, but never less verbose than
    info, because its progress events are what feed the watchdog."""
    configured = configured if configured in LEVELS else "info"
    return configured if LEVELS.index(configured) <= LEVELS.index("info") else "info"


def backoff(attempt, base=10, cap=300):
    """Seconds to wait before retry number ``attempt`` (1, 2, …): doubling, capped."""
    return min(cap, base * (2 ** max(0, attempt - 1)))


def wired_interface(names):
    """The first wired interface (eth*, end*, enx*, usb*) in name order, or None."""
    wired = sorted(n for n in names if WIRED.match(n))
    return wired[0] if wired else None


def migrate_argv(device, settings, files):
    """``migos migrate`` arguments from migrate.json and the files read from the boot partition.

    ``files`` maps names to local paths: config.json, hostname (optional), and the
    NetworkManager keyfiles under ``system-connections``.
    """
    argv = ["migrate", "--device", device, "-c", files["config.json"]]
    image = settings.get("image") or {}
    source = image.get("source")
    if source == "url":
        argv += ["--image", image["url"]]
    elif source == "path":
        argv += ["--image", image["path"]]
    elif source == "api":
        argv += ["--version", image.get("version") or "latest"]
    else:
        raise ValueError("migrate.json names no image source (%r)" % (source,))
    for path in files.get("system-connections", []):
        argv += ["--nwmgr-cfg", path]
    if settings.get("hostname"):
        argv += ["--hostname", settings["hostname"]]
    argv += ["--log-level", pipe_level((settings.get("log") or {}).get("log_level"))]
    return argv


def static_ipv4(keyfile_text):
    """(address/prefix, gateway, [dns]) from a NetworkManager keyfile with method=manual, else None."""
    section, values = None, {}
    for line in keyfile_text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and section == "ipv4":
            k, v = line.split("=", 1)
            values[k.strip()] = v.strip()
    if values.get("method") != "manual" or "address1" not in values:
        return None
    addr, _, gw = values["address1"].partition(",")
    gw = values.get("gateway", gw) or None
    dns = [d for d in values.get("dns", "").split(";") if d]
    return addr, gw, dns


def is_wired_keyfile(keyfile_text):
    return bool(re.search(r"^type=(ethernet|802-3-ethernet)\s*$", keyfile_text, re.M))


# --- wifi --------------------------------------------------------------------------------------

WIRELESS = re.compile(r"^(wlan|wlp|wlx)\w*$")


def wireless_interface(names):
    wl = sorted(n for n in names if WIRELESS.match(n))
    return wl[0] if wl else None


def wifi_networks(keyfiles):
    """[(name, ssid bytes, psk or None, key_mgmt, hidden)] of the wifi keyfiles that
    wpa_supplicant can join (open, WPA-PSK, SAE), in file-name order; enterprise (802.1X)
    ones are skipped. ``keyfiles``: {file name: text}."""
    from ..stage1 import keyfile
    out = []
    for name in sorted(keyfiles):
        sections, _ = keyfile.parse_keyfile(keyfiles[name])
        conn = sections.get("connection", {})
        if conn.get("type", "").strip() not in ("wifi", "802-11-wireless"):
            continue
        wifi = sections.get("wifi") or sections.get("802-11-wireless") or {}
        if "ssid" not in wifi:
            continue
        sec = sections.get("wifi-security") or sections.get("802-11-wireless-security") or {}
        mgmt = sec.get("key-mgmt", "").strip()
        psk = keyfile.unescape(sec["psk"].strip()) if "psk" in sec else None
        if mgmt in ("", "none") and psk is None:
            kind = "NONE"
        elif mgmt == "wpa-psk" and psk:
            kind = "WPA-PSK"
        elif mgmt == "sae" and psk:
            kind = "SAE"
        else:
            continue
        out.append((name, keyfile.decode_ssid(wifi["ssid"]), psk, kind,
                    wifi.get("hidden", "").strip() == "true"))
    return out


def _wpa_string(value):
    """A wpa_supplicant.conf value: "text" when plain printable ASCII, else hex (no quotes)."""
    if all(0x20 <= b < 0x7f for b in value) and b'"' not in value and b"\\" not in value:
        return '"%s"' % value.decode("ascii")
    return value.hex()


def wpa_conf(networks, country=None):
    """wpa_supplicant.conf text for ``networks`` (from wifi_networks); earlier ones first."""
    lines = ["ctrl_interface=/run/wpa_supplicant", "update_config=0"]
    if country and re.match(r"^[A-Z]{2}$", country):
        lines.append("country=%s" % country)
    for i, (_, ssid, psk, kind, hidden) in enumerate(networks):
        lines += ["", "network={", "\tssid=%s" % _wpa_string(ssid)]
        if kind == "NONE":
            lines.append("\tkey_mgmt=NONE")
        else:
            lines.append("\tkey_mgmt=%s" % kind)
            if kind == "WPA-PSK" and re.match(r"^[0-9a-fA-F]{64}$", psk):
                lines.append("\tpsk=%s" % psk)
            else:   # a passphrase: always quoted (wpa_supplicant reads to the last quote)
                lines.append('\t%s="%s"' % ("sae_password" if kind == "SAE" else "psk",
                                            psk.replace("\n", "")))
            if kind == "SAE":
                lines.append("\tieee80211w=2")
        if hidden:
            lines.append("\tscan_ssid=1")
        lines += ["\tpriority=%d" % (len(networks) - i), "}"]
    return "\n".join(lines) + "\n"
