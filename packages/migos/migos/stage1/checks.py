"""The diagnostic: every pre-flight check, each with a status and a message that says
what is wrong and what to do. ``migos diagnostic``, ``init`` and ``takeover`` run them."""

import os

from .. import boards, log
from ..errors import UsageError
from . import api, bootcfg, disk, netconf, osinfo

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skipped"
MIN_RAM_KIB = 300 * 1024
# Room MIGOS needs on the boot partition besides the tarball's files (config.json,
# migrate.json, network files, backups, fallback log).
BOOT_MARGIN = 2 * 1024 * 1024
DEFAULT_MIGOS_SIZE = 48 * 1024 * 1024


class Check:
    def __init__(self, _name, _status, _msg, **data):
        self.name, self.status, self.msg, self.data = _name, _status, _msg, data

    def to_dict(self):
        d = {"check": self.name, "status": self.status, "msg": self.msg}
        if self.data:
            d["data"] = self.data
        return d


class Context:
    """What the checks look at, gathered once (pure reads below ``root``)."""

    def __init__(self, args, config=None, migos_size=None):
        self.args = args
        self.root = args.root
        self.config = config
        self.migos_size = migos_size
        self.os = osinfo.describe_os(self.root)
        self.model = osinfo.dt_model(self.root)
        self.board = boards.by_model(self.model) if self.model else None
        self.arch = osinfo.architecture(self.root)
        self.hostname = osinfo.hostname(self.root)
        try:
            self.boot = disk.find_boot(self.root)
        except UsageError as e:
            self.boot, self.boot_error = None, e.line()
        else:
            self.boot_error = None
        self.network = netconf.collect(self.root, wifis=getattr(args, "wifi", None),
                                       no_wifis=getattr(args, "no_wifis", False),
                                       extra_nm=getattr(args, "nwmgr_cfg", None) or ())

    @property
    def target_device_type(self):
        change = getattr(self.args, "change_dt_to", None)
        if change:
            return change
        if self.config is not None:
            return self.config.device_type
        if self.board is not None:
            return boards.default_device_type(self.board, self.arch)
        return None


def _off(args, name):
    return bool(getattr(args, "no_%s_check" % name, False))


def check_os(ctx):
    o = ctx.os
    if o["supported"]:
        return Check("os", OK, "%s is supported" % o["name"], **o)
    st = SKIP if _off(ctx.args, "os") else FAIL
    return Check("os", st, "%s is not a supported OS (supported: Raspbian/Raspberry Pi OS and "
                 "Debian 10-13); --no-os-check tries anyway" % o["name"], **o)


def check_board(ctx):
    if ctx.board is not None:
        b = ctx.board
        bits = 64 if ctx.arch == "arm64" else 32
        fit_config, kernel_file = boards.boot_plan(b, bits)
        return Check("board", OK, "%s (%s): MIGOS boots FIT configuration %s, firmware kernel file %s"
                     % (b.name, ctx.model, fit_config, kernel_file or "none (no %d-bit boot)" % bits),
                     key=b.key, model=ctx.model, device_types=list(boards.device_types(b)),
                     fit_config=fit_config, kernel_file=kernel_file, kernel32=b.kernel32)
    st = SKIP if _off(ctx.args, "dt") else FAIL
    what = "no device-tree model (not a Raspberry Pi?)" if ctx.model is None \
        else "unknown board %r" % ctx.model
    return Check("board", st, "%s; --no-dt-check skips the board checks" % what, model=ctx.model)


def check_device_type(ctx):
    slug = ctx.target_device_type
    if ctx.config is None and not getattr(ctx.args, "change_dt_to", None):
        return Check("device-type", WARN, "no config.json given (-c); suggested device type %s"
                     % (slug or "unknown"), suggested=slug)
    if slug not in boards.all_device_types() and not _off(ctx.args, "dt"):
        return Check("device-type", FAIL, "device type %r is not a Raspberry Pi type MIGOS "
                     "supports (%s)" % (slug, ", ".join(boards.all_device_types())))
    if ctx.board is None:
        return Check("device-type", SKIP if _off(ctx.args, "dt") else FAIL,
                     "cannot check device type %s without a known board" % slug)
    allowed = boards.device_types(ctx.board)
    if slug in allowed:
        return Check("device-type", OK, "%s runs on %s" % (slug, ctx.board.name), device_type=slug)
    st = SKIP if _off(ctx.args, "dt") else FAIL
    return Check("device-type", st, "device type %s does not run on %s (use one of: %s; "
                 "download config.json for a fleet of that type, or --change-dt-to)"
                 % (slug, ctx.board.name, ", ".join(allowed) or "none"), device_type=slug)


def check_config(ctx):
    if ctx.config is None:
        return Check("config.json", WARN, "no config.json given (-c)")
    c = ctx.config
    data = {"deviceType": c.device_type, "apiEndpoint": c.api_endpoint,
            "applicationId": c.data.get("applicationId"), "uuid": c.uuid}
    return Check("config.json", OK, "%s is valid for fleet %s" % (c.path, data["applicationId"]),
                 **data)


def check_disk(ctx):
    if ctx.boot is None:
        return Check("disk", FAIL, ctx.boot_error)
    dpath, partno, fstype = disk.boot_disk(ctx.root, ctx.boot, getattr(ctx.args, "disk", None))
    if fstype and fstype not in ("vfat", "msdos"):
        return Check("disk", FAIL, "the boot partition is %s, not FAT" % fstype)
    if dpath is None:
        return Check("disk", FAIL, "cannot find the disk behind %s (not a mounted partition); "
                     "pass --disk DEVICE_OR_IMAGE" % ctx.boot)
    info = disk.geometry(dpath, partno)
    if info["problems"]:
        return Check("disk", FAIL, "; ".join(info["problems"]), **info)
    return Check("disk", OK, "%s: %.1f GB, MBR boot+root" % (dpath, info["size"] / 1e9), **info)


def check_boot_space(ctx):
    if ctx.boot is None:
        return Check("boot-space", FAIL, ctx.boot_error)
    need = (ctx.migos_size or DEFAULT_MIGOS_SIZE) + BOOT_MARGIN
    try:
        with open(os.path.join(ctx.boot, "config.txt"), "rb") as f:
            need += len(f.read())
    except OSError:
        pass
    free = disk.free_bytes(ctx.boot)
    if free is None:
        return Check("boot-space", WARN, "the boot partition's file system does not report its "
                     "free space; MIGOS needs %.1f MiB" % (need / 2**20), need=need)
    if free < need:
        return Check("boot-space", FAIL, "the boot partition has %.1f MiB free; MIGOS needs %.1f MiB "
                     "(remove unused kernels or overlays from it)" % (free / 2**20, need / 2**20),
                     free=free, need=need)
    return Check("boot-space", OK, "%.1f MiB free, %.1f MiB needed" % (free / 2**20, need / 2**20),
                 free=free, need=need)


def kernel_lines(text):
    """[(line number, value)] of every ``kernel=`` line in config.txt ``text``, whatever its
    filter section (a conservative reading: the firmware may apply any of them). Pure."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if sep and key.strip() == "kernel":
            out.append((n, value.strip()))
    return out


def check_boot_kernel(ctx):
    """An old ``kernel=`` line outlives MIGOS's settings: 32-bit MIGOS builds set none (the
    firmware picks migos/kernel.img, kernel7.img or kernel7l.img by board), so the firmware
    would look for migos/<old name> and boot nothing. 64-bit builds set kernel=u-boot.bin."""
    if ctx.boot is None:
        return Check("boot-kernel", SKIP, "no boot partition")
    try:
        with open(os.path.join(ctx.boot, "config.txt"), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return Check("boot-kernel", OK, "no config.txt: the firmware picks the kernel file")
    lines = kernel_lines(text)
    if not lines:
        return Check("boot-kernel", OK, "config.txt names no kernel file: the firmware picks it")
    applies = bootcfg.effective(text, ctx.board.key if ctx.board else None).get("kernel")
    return Check("boot-kernel", WARN, "config.txt line %d sets kernel=%s%s: a 32-bit MIGOS boot "
                 "partition relies on the firmware's own choice of migos/kernel*.img and would not boot "
                 "(migos init refuses it); comment the line out for a 32-bit MIGOS (64-bit MIGOS sets "
                 "its own kernel=)" % (lines[0][0], lines[0][1],
                                       "" if applies else " (in a section that may not apply here)"),
                 lines=[{"line": n, "kernel": v} for n, v in lines])


def check_ram(ctx):
    kib = osinfo.mem_total_kib(ctx.root)
    if kib is None:
        return Check("ram", FAIL, "cannot read MemTotal from /proc/meminfo")
    if kib < MIN_RAM_KIB:
        return Check("ram", FAIL, "%d MiB RAM; MIGOS runs from RAM and needs %d MiB"
                     % (kib // 1024, MIN_RAM_KIB // 1024), kib=kib)
    return Check("ram", OK, "%d MiB RAM" % (kib // 1024), kib=kib)


def check_route(ctx):
    path = os.path.join(ctx.root, "proc/net/route")
    try:
        with open(path) as f:
            rows = [ln.split() for ln in f.read().splitlines()[1:]]
    except OSError:
        return Check("route", WARN, "cannot read /proc/net/route")
    dflt = [r for r in rows if len(r) > 2 and r[1] == "00000000"]
    if not dflt:
        return Check("route", WARN, "no default route: the device may be offline")
    return Check("route", OK, "default route via %s" % dflt[0][0], interface=dflt[0][0])


def check_dns(ctx):
    try:
        with open(os.path.join(ctx.root, "etc/resolv.conf")) as f:
            ns = [ln.split()[1] for ln in f if ln.startswith("nameserver") and len(ln.split()) > 1]
    except OSError:
        ns = []
    if not ns:
        return Check("dns", WARN, "no nameserver in /etc/resolv.conf")
    return Check("dns", OK, "nameservers %s" % ", ".join(ns), nameservers=ns)


def check_api(ctx):
    if _off(ctx.args, "api"):
        return Check("api", SKIP, "--no-api-check")
    if ctx.config is None:
        return Check("api", WARN, "no config.json: balena API not checked")
    ok, msg = api.ping(ctx.config.api_endpoint, ctx.args.check_timeout)
    return Check("api", OK if ok else FAIL, msg if ok else
                 msg + "; fix the network or --no-api-check")


def check_vpn(ctx):
    if _off(ctx.args, "vpn"):
        return Check("vpn", SKIP, "--no-vpn-check")
    if ctx.config is None:
        return Check("vpn", WARN, "no config.json: VPN not checked")
    host = ctx.config.data.get("vpnEndpoint")
    port = ctx.config.data.get("vpnPort", 443)
    if not host:
        return Check("vpn", WARN, "config.json has no vpnEndpoint")
    ok, msg = api.vpn_reachable(host, port, ctx.args.check_timeout)
    return Check("vpn", OK if ok else FAIL, msg if ok else msg + "; fix the network or "
                 "--no-vpn-check")


def check_network_config(ctx):
    net = ctx.network
    data = net.to_dict()
    errors = net.errors
    warns = [p for p in net.problems if p.severity != "error"]
    if errors:
        st = SKIP if _off(ctx.args, "nwmgr") else FAIL
        return Check("network-config", st, "%d network configuration(s) cannot be carried over: %s; "
                     "select the networks to keep with --wifi SSID, add a keyfile with --nwmgr-cfg, "
                     "or --no-nwmgr-check" % (len(errors), "; ".join(str(p) for p in errors)), **data)
    route = None
    try:
        with open(os.path.join(ctx.root, "proc/net/route")) as f:
            for ln in f.read().splitlines()[1:]:
                r = ln.split()
                if len(r) > 2 and r[1] == "00000000":
                    route = r[0]
                    break
    except OSError:
        pass
    if route and route.startswith(("wlan", "wlp", "wlx")) and not net.wifi():
        st = SKIP if _off(ctx.args, "nwmgr") else FAIL
        return Check("network-config", st, "the device is online through %s but no wifi network "
                     "will be carried over; it would be offline after the migration" % route, **data)
    n = len(net.connections)
    msg = "%d connection(s) to carry over" % n
    if warns:
        msg += " (%d with notes: %s)" % (len(warns), "; ".join(str(p) for p in warns))
    return Check("network-config", OK if n or not warns else WARN, msg, **data)


def check_hostname(ctx):
    name = ctx.hostname
    if getattr(ctx.args, "no_keep_name", False):
        return Check("hostname", SKIP, "--no-keep-name: balenaOS picks the name")
    if name is None:
        return Check("hostname", WARN, "no /etc/hostname: balenaOS picks the name")
    if not osinfo.valid_hostname(name):
        return Check("hostname", WARN, "hostname %r is not valid for balenaOS; not kept" % name)
    return Check("hostname", OK, "hostname %s is kept" % name, hostname=name)


ALL = (check_os, check_board, check_device_type, check_config, check_disk, check_boot_space,
       check_boot_kernel, check_ram, check_route, check_dns, check_api, check_vpn, check_network_config,
       check_hostname)


class Report:
    def __init__(self, ctx, checks):
        self.ctx = ctx
        self.checks = checks

    @property
    def ok(self):
        return not any(c.status == FAIL for c in self.checks)

    def failed(self):
        return [c for c in self.checks if c.status == FAIL]

    def to_dict(self):
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks],
                "target_device_type": self.ctx.target_device_type}

    def text(self):
        lines = []
        for c in self.checks:
            lines.append("%-8s %-15s %s" % (c.status.upper(), c.name, c.msg))
        lines.append("")
        lines.append("migration may go ahead" if self.ok else
                     "migration may NOT go ahead: %d check(s) failed" % len(self.failed()))
        return "\n".join(lines) + "\n"


def run(ctx):
    checks = []
    for fn in ALL:
        c = fn(ctx)
        checks.append(c)
        log.event("OK" if c.status in (OK, SKIP) else ("FAIL" if c.status == FAIL else "OK"),
                  "check %s: %s: %s" % (c.name, c.status, c.msg),
                  level="info" if c.status != FAIL else "warn")
    return Report(ctx, checks)
