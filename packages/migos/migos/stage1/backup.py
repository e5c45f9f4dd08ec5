"""``migos backup --out DIR``: the boot partition's files (checksummed), the hostname,
and every network configuration as NetworkManager keyfiles.

Layout of DIR::

    boot/...               every file of the boot partition, byte for byte
    boot.SHA256SUMS        sha256sum -c format, paths relative to DIR
    hostname               the old hostname (if any)
    system-connections/    one *.nmconnection per connection (mode 0600)
    network.json           what was converted and every problem (no secrets)
    backup.json            summary: OS, board, files, MIGOS version
"""

import json
import os
import shutil

from .. import __version__, log
from . import bootinst, osinfo


def _copy_tree(src, dst):
    sums = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src)
        for n in sorted(filenames):
            s = os.path.join(dirpath, n)
            rel = os.path.normpath(os.path.join(rel_dir, n))
            d = os.path.join(dst, rel)
            os.makedirs(os.path.dirname(d), exist_ok=True)
            shutil.copyfile(s, d)
            sums.append((rel, bootinst.sha256_file(d)))
    return sums


def plan(ctx):
    """(relative path, what) of everything backup writes."""
    items = []
    for rel, _ in sorted(bootinst.file_tree(ctx.boot).items()):
        items.append(("boot/" + rel, "boot partition file"))
    if ctx.hostname:
        items.append(("hostname", ctx.hostname))
    for c in ctx.network.connections:
        items.append(("system-connections/" + c.filename, "%s connection %s" % (c.type, c.id)))
    items += [("network.json", "network report"), ("boot.SHA256SUMS", "checksums"),
              ("backup.json", "summary")]
    return items


def write(ctx, out, pretend=False):
    items = plan(ctx)
    if pretend:
        for rel, what in items:
            log.info("backup (pretend): would write %s (%s)" % (rel, what))
        return items
    if os.path.exists(out) and os.listdir(out):
        from ..errors import UsageError
        raise UsageError("backup directory %s is not empty" % out, "choose a new --out directory")
    os.makedirs(out, exist_ok=True)
    sums = _copy_tree(ctx.boot, os.path.join(out, "boot"))
    with open(os.path.join(out, "boot.SHA256SUMS"), "w") as f:
        for rel, h in sums:
            f.write("%s  boot/%s\n" % (h, rel))
    if ctx.hostname:
        with open(os.path.join(out, "hostname"), "w") as f:
            f.write(ctx.hostname + "\n")
    from . import netconf
    netconf.write_keyfiles(ctx.network, os.path.join(out, "system-connections"))
    with open(os.path.join(out, "network.json"), "w") as f:
        json.dump(ctx.network.to_dict(), f, indent=1, sort_keys=True)
    summary = {"migos_version": __version__, "os": ctx.os, "model": ctx.model,
               "board": ctx.board.key if ctx.board else None, "arch": ctx.arch,
               "hostname": ctx.hostname, "boot_files": len(sums),
               "connections": [c.filename for c in ctx.network.connections],
               "problems": [p.to_dict() for p in ctx.network.problems]}
    with open(os.path.join(out, "backup.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    log.event("SUCCESS", "backup written to %s" % out, files=len(items))
    return items


def valid_hostname(name):
    return osinfo.valid_hostname(name)
