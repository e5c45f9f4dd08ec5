"""Pure decisions of the runtime (unit-tested without a device)."""

import re

WIRED = re.compile(r"^(eth|end|enx|usb)\w*$")

# migrate's exit codes (stage 2): 0 done, 2 bad input with nothing written, else resumable
DONE, RETRY, GIVE_BACK = "done", "retry", "give-back"


def outcome(exit_code):
    """What an exit code of ``migos migrate`` means for the runtime."""
    if exit_code == 0:
        return DONE
    if exit_code == 2:
        return GIVE_BACK          # nothing was written: restore-boot, back to the old OS
    return RETRY                  # something may be written: only forward, resume


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
    level = (settings.get("log") or {}).get("log_level")
    if level:
        argv += ["--log-level", level]
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
