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
