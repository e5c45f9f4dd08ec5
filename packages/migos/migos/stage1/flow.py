"""What ``diagnostic``, ``backup``, ``init``, ``takeover`` and ``restore-boot`` do, in order."""

import datetime
import json
import os
import stat
import sys
import tempfile
import time
import urllib.parse

from .. import __version__, config as configmod, log, run
from ..errors import CheckFailed, UsageError
from . import api, bootcfg, bootinst, checks, netconf, tarball
from . import backup as backupmod

SECRET_CONFIG_KEYS = ("apiKey", "deviceApiKey")


def need_root(args, what):
    if args.root in ("", "/") and os.geteuid() != 0:
        raise UsageError("%s must run as root" % what, "run it with sudo")


def load_config(path):
    if not path:
        return None
    cfg = configmod.load(path)
    for k in SECRET_CONFIG_KEYS:
        if isinstance(cfg.data.get(k), str):
            log.add_secret(cfg.data[k])
    return cfg


def check_paths(args):
    for f in getattr(args, "nwmgr_cfg", None) or ():
        if not os.path.isfile(f):
            raise UsageError("--nwmgr-cfg %s does not exist" % f, "give the path of a keyfile")
    if getattr(args, "backup_cfg", None) and not os.path.isfile(args.backup_cfg):
        raise UsageError("--backup-cfg %s does not exist" % args.backup_cfg, "give a YAML file")
    api.check_version_spec(getattr(args, "version", None))
    if args.root in ("", "/"):
        for opt in ("log_to", "flash_to"):
            dev = getattr(args, opt, None)
            if dev and not (os.path.exists(dev) and stat.S_ISBLK(os.stat(dev).st_mode)):
                raise UsageError("--%s %s is not a block device" % (opt.replace("_", "-"), dev),
                                 "give a device such as /dev/sda1")
    url = getattr(args, "log_http", None)
    if url and not url.startswith(("http://", "https://")):
        raise UsageError("--log-http %s is not an http(s) URL" % url,
                         "give the log endpoint as http(s)://HOST/PATH")
    if getattr(args, "change_dt_to", None):
        from .. import boards
        if args.change_dt_to not in boards.all_device_types():
            raise UsageError("--change-dt-to %s is not a device type MIGOS supports" %
                             args.change_dt_to, "use one of: " + ", ".join(boards.all_device_types()))


def output(args, data, text):
    if args.json:
        sys.stdout.write(json.dumps(log.redact(data), indent=1, sort_keys=True, default=str) + "\n")
    else:
        sys.stdout.write(log.redact(text))
    sys.stdout.flush()


# --- diagnostic ----------------------------------------------------------------------------

def diagnostic(args):
    log.event("INI", "migos %s diagnostic" % __version__, level="debug")
    check_paths(args)
    cfg = load_config(getattr(args, "config", None))
    ctx = checks.Context(args, cfg)
    report = checks.run(ctx)
    output(args, report.to_dict(), report.text())
    return 0 if report.ok else 2


# --- backup ---------------------------------------------------------------------------------

def backup(args):
    log.event("INI", "migos %s backup" % __version__, level="debug")
    check_paths(args)
    ctx = checks.Context(args)
    if ctx.boot is None:
        raise UsageError(ctx.boot_error)
    items = backupmod.write(ctx, args.out, pretend=args.pretend)
    data = {"out": args.out, "pretend": args.pretend, "files": [i[0] for i in items],
            "network": ctx.network.to_dict()}
    lines = ["%s %s" % ("would write" if args.pretend else "wrote", i[0]) for i in items]
    for p in ctx.network.problems:
        lines.append("%s: %s" % (p.severity.upper(), p))
    output(args, data, "\n".join(lines) + "\n")
    return 0


# --- the MIGOS tarball ------------------------------------------------------------------------

def find_tarball(args, workdir):
    if getattr(args, "migos_tarball", None):
        return tarball.load(args.migos_tarball)
    if getattr(args, "migos_url", None):
        url = args.migos_url
        if not url.startswith(("http://", "https://")):
            raise UsageError("--migos-url %s is not an http(s) URL" % url, "give an http(s) URL")
        if workdir:
            os.makedirs(workdir, exist_ok=True)
        d = tempfile.mkdtemp(prefix="migos-tarball-", dir=workdir)
        name = os.path.basename(urllib.parse.urlparse(url).path) or "migos-boot.tar.gz"
        api.download(url, os.path.join(d, name))
        api.download(urllib.parse.urljoin(url, "SHA256SUMS"), os.path.join(d, "SHA256SUMS"))
        return tarball.load(os.path.join(d, name))
    here = os.path.dirname(os.path.abspath(sys.argv[0] or "."))
    cands = sorted(f for f in os.listdir(here) if f.startswith("migos-boot-") and
                   f.endswith(".tar.gz")) if os.path.isdir(here) else []
    if len(cands) == 1:
        return tarball.load(os.path.join(here, cands[0]))
    raise UsageError("no MIGOS boot tarball given", "pass --migos-tarball PATH or --migos-url URL")


# --- settings for the MIGOS runtime --------------------------------------------------------------

def image_source(args, cfg, slug, resolve=True):
    if getattr(args, "image", None):
        img = args.image
        if img.startswith(("http://", "https://")):
            return {"source": "url", "url": img}
        full = img if os.path.isabs(img) else os.path.abspath(img)
        where = os.path.join(args.root, full.lstrip("/"))
        if not os.path.isfile(where):
            where = full
        if not os.path.isfile(where):
            raise UsageError("image %s does not exist" % img, "give the path of a balenaOS image")
        check_image_file(where)
        return {"source": "path", "path": full}
    spec = getattr(args, "version", None)
    version = spec
    if resolve and not getattr(args, "no_api_check", False):
        version = api.resolve_version(cfg.api_endpoint, cfg.api_key, slug, spec,
                                      timeout=args.check_timeout)
    return {"source": "api", "version": version, "requested": spec or "latest",
            "device_type": slug}


IMAGE_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
               (b"PK\x03\x04", "zip"))


def check_image_file(path):
    """A raw disk image (MBR) or a .gz/.xz/.zst/.zip; stage 2 checks the inside."""
    with open(path, "rb") as f:
        head = f.read(512)
    if any(head.startswith(m) for m, _ in IMAGE_MAGIC):
        return
    if len(head) == 512 and head[510:512] == b"\x55\xaa":
        return
    raise UsageError("%s is not a balenaOS image (neither a raw disk image nor .gz/.xz/.zst/.zip)"
                     % path, "download the image for this device type from balena")


def migrate_settings(args, ctx, image, slug):
    disabled = [n for n in ("os", "dt", "api", "vpn", "nwmgr")
                if getattr(args, "no_%s_check" % n, False)]
    keep = ctx.hostname if (ctx.hostname and not args.no_keep_name and
                            backupmod.valid_hostname(ctx.hostname)) else None
    return {
        "format": 1,
        "migos_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "image": image,
        "device_type": slug,
        "config_device_type": ctx.config.device_type,
        "change_device_type": bool(getattr(args, "change_dt_to", None)) and
        args.change_dt_to != ctx.config.device_type,
        "hostname": keep,
        "board": ctx.board.key if ctx.board else None,
        "old_os": ctx.os,
        "log": {"log_to": args.log_to, "log_level": args.s2_log_level,
                "http": getattr(args, "log_http", None),
                "fallback_log": args.fallback_log,
                "fallback_log_filename": args.fallback_log_filename,
                "fallback_log_dir": args.fallback_log_dir},
        "checks_disabled": disabled,
        "flash_to": args.flash_to,
        "wifi_country": ctx.network.country,
        "network": [c.filename for c in ctx.network.connections],
        "cleanup": not args.no_cleanup,
        "backup_archive": "migos/backup.tgz" if getattr(args, "backup_cfg", None) else None,
    }


def runtime_files(args, ctx, image, slug):
    """{path on the boot partition: bytes} of what the MIGOS runtime reads."""
    files = {}
    files["migos/config.json"] = ctx.config.to_json().encode("utf-8")
    settings = migrate_settings(args, ctx, image, slug)
    files["migos/migrate.json"] = (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode()
    if settings["hostname"]:
        files["migos/hostname"] = (settings["hostname"] + "\n").encode()
    for c in ctx.network.connections:
        files["migos/system-connections/" + c.filename] = \
            netconf.keyfile.render(c).encode("utf-8", "surrogateescape")
    try:
        entry = bootcfg.fallback_entry(ctx.boot, ctx.board)
    except ValueError as e:
        raise CheckFailed("cannot record the old OS's kernel entry for the fallback: %s" % e,
                          "fix the old OS's boot partition first")
    files["migos/fallback.env"] = bootcfg.fallback_env_text(entry).encode()
    if getattr(args, "backup_cfg", None):
        from . import volumes
        files["migos/backup.tgz"] = volumes.make_archive(args.backup_cfg, args.root)
    from . import agentcarry
    files.update(agentcarry.files_for_init(args, time.time()))
    return files


# --- init / takeover --------------------------------------------------------------------------

def _checks_or_fail(ctx):
    report = checks.run(ctx)
    if not report.ok:
        failed = report.failed()
        raise CheckFailed("%d check(s) failed: %s" % (len(failed), "; ".join(
            "%s: %s" % (c.name, c.msg) for c in failed)),
            "run 'migos diagnostic' for the full report")
    return report


def acknowledge(args, summary):
    if args.pretend or getattr(args, "no_ack", True):
        return
    if not sys.stdin.isatty():
        raise UsageError("takeover asks for confirmation but stdin is not a terminal",
                         "pass --no-ack to go ahead without asking")
    sys.stderr.write(summary + "\nThis replaces the OS of this device with balenaOS. "
                     "Type 'yes' to go ahead: ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() != "yes":
        raise UsageError("not confirmed", "nothing was changed")


def init(args, takeover=False):
    if not takeover:
        log.event("INI", "migos %s init" % __version__, level="debug")
    check_paths(args)
    if not takeover:
        need_root(args, "migos init")
    cfg = load_config(args.config)
    if cfg is None:
        raise UsageError("no config.json given", "pass the fleet's config.json with -c")
    workdir = os.path.abspath(args.work_dir)
    tar = find_tarball(args, workdir if not args.pretend else None)
    ctx = checks.Context(args, cfg, migos_size=tar.size())
    report = _checks_or_fail(ctx)
    slug = ctx.target_device_type
    image = image_source(args, cfg, slug)
    log.info("image: %s" % json.dumps(image, sort_keys=True))
    files = runtime_files(args, ctx, image, slug)
    summary = ("board %s, %s -> balenaOS %s for %s; %d network connection(s); image %s"
               % (ctx.board.name if ctx.board else "?", ctx.os["name"],
                  image.get("version") or "", slug, len(ctx.network.connections),
                  image.get("path") or image.get("url") or "from the balena API"))
    if takeover:
        acknowledge(args, summary)
        if not args.pretend:
            bdir = os.path.join(workdir, "migos-backup-" + datetime.datetime.now(
                datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
            backupmod.write(ctx, bdir)
    from . import disk as diskmod
    disk_path = diskmod.boot_disk(args.root, ctx.boot, getattr(args, "disk", None))[0]
    actions = bootinst.install(ctx.boot, tar, files, pretend=args.pretend, disk_path=disk_path)
    data = {"pretend": args.pretend, "boot": ctx.boot, "image": image, "device_type": slug,
            "actions": [list(a) for a in actions], "checks": report.to_dict()["checks"],
            "network": ctx.network.to_dict()}
    text = "\n".join("%s%s %s (%s)" % ("would " if args.pretend else "", a[0], a[1], a[2])
                     for a in actions) + "\n" + summary + "\n"
    output(args, data, text)
    if not args.pretend and not args.no_reboot and args.root in ("", "/"):
        log.event("END", "rebooting into MIGOS")
        run.run(["reboot"])
    elif not args.pretend:
        log.event("END", "MIGOS is installed; it starts at the next boot")
    return 0


def download_only(args):
    cfg = load_config(args.config)
    if cfg is None:
        raise UsageError("--download-only needs config.json (-c)", "pass -c config.json")
    api.check_version_spec(args.version)
    slug = args.change_dt_to or cfg.device_type
    if args.image:
        raise UsageError("--download-only with --image: nothing to download",
                         "drop -i, or drop -d")
    version = api.resolve_version(cfg.api_endpoint, cfg.api_key, slug, args.version,
                                  timeout=args.check_timeout)
    dest = os.path.join(os.path.abspath(args.work_dir),
                        "balena-cloud-%s-%s.img.gz" % (slug, version))
    if args.pretend:
        output(args, {"pretend": True, "version": version, "device_type": slug, "path": dest},
               "would download balenaOS %s for %s to %s\n" % (version, slug, dest))
        return 0
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    size = api.download_image(cfg.api_endpoint, cfg.api_key, slug, version, dest)
    output(args, {"version": version, "device_type": slug, "path": dest, "size": size},
           "downloaded balenaOS %s for %s to %s (%d bytes)\n" % (version, slug, dest, size))
    return 0


def takeover(args):
    log.event("INI", "migos %s takeover" % __version__, level="debug")
    if args.download_only:
        return download_only(args)
    need_root(args, "migos takeover")
    return init(args, takeover=True)


def restore_boot(args):
    log.event("INI", "migos %s restore-boot" % __version__, level="debug")
    need_root(args, "migos restore-boot")
    from . import disk
    boot = disk.find_boot(args.root)
    actions = bootinst.restore(boot, pretend=args.pretend, disk_path=getattr(args, "disk", None))
    output(args, {"pretend": args.pretend, "boot": boot, "actions": [list(a) for a in actions]},
           "\n".join("%s%s %s (%s)" % ("would " if args.pretend else "", *a) for a in actions) + "\n")
    return 0
