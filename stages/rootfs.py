"""rootfs: unpack the fetched .debs and configure them under proot + qemu-user.

The root is assembled the way Debian's bootstrappers do it (merged /usr, every .deb
unpacked, then ``dpkg --install`` inside the root), but the second half runs under
``proot -q qemu-<arch>-static``: no chroot, no binfmt_misc registration, the host is
left as it was. Busybox applet links are made first so maintainer scripts find a
shell and the usual tools.

Output: ``build/NAME/rootfs/`` (renamed into place only when complete) and
``build/NAME/rootfs.json`` (dpkg's view of what is installed, for the manifest).
"""

import json
import os
import shutil

from debian import deb822

from . import fetch
from .tools import BuildError, pipe_to_tar, run, without_statx

MERGED_USR = ("bin", "sbin", "lib")


def busybox_applets(ctx, root):
    """Full paths of busybox's applets, asked from the target's busybox under qemu-user."""
    out = run(ctx.target.qemu_user, "-L", root, os.path.join(root, "usr/bin/busybox"), "--list-full",
              quiet=True)
    return [line.strip() for line in out.splitlines() if line.strip()]


def link_applets(root, applets):
    for path in applets:
        dest = os.path.join(root, path)
        if os.path.lexists(dest):
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.symlink("/usr/bin/busybox", dest)


def unpack(root, debs):
    for d in ("usr/bin", "usr/sbin", "usr/lib"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for d in MERGED_USR:
        os.symlink("usr/" + d, os.path.join(root, d))
    for deb in debs:
        pipe_to_tar(deb, root)
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "tmp", "proc", "sys", "dev"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
    open(os.path.join(root, "var/lib/dpkg/available"), "w").close()


def proot(ctx, root, *argv, binds=(), log_file=None):
    """Run ``argv`` inside ``root`` as fake root under qemu-user emulation."""
    args = ["-0", "-q", ctx.target.qemu_user, "-r", root, "-w", "/"]
    for b in ("/dev", "/proc", "/sys") + tuple(binds):
        args += ["-b", b]
    env = ["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive",
           "DEBCONF_NONINTERACTIVE_SEEN=true", "LC_ALL=C", "SOURCE_DATE_EPOCH=%d" % ctx.source_date_epoch]
    # 32-bit ARM: refuse statx so stat calls take the path proot translates (tools.without_statx)
    preexec = without_statx if ctx.target.arch in ("armhf", "armel") else None
    return run("proot", *(args + env + list(argv)), log_file=log_file, preexec=preexec)


def configure(ctx, root, debs):
    """``dpkg --install`` every .deb inside the root (under proot), in one transaction."""
    archives = os.path.dirname(debs[0])
    inside = ["/debs/" + os.path.basename(d) for d in debs]
    proot(ctx, root, "dpkg", "--install", "--force-depends", "--force-confdef", *inside,
          binds=("%s:/debs" % archives,), log_file=ctx.path("rootfs.log"))
    proot(ctx, root, "dpkg", "--configure", "-a", log_file=ctx.path("rootfs.log"))


def installed(root):
    """dpkg's status file as [{name, version, arch}] of fully installed packages."""
    result = []
    with open(os.path.join(root, "var/lib/dpkg/status"), encoding="utf-8") as f:
        for para in deb822.Deb822.iter_paragraphs(f):
            if para.get("Status", "").endswith(" installed"):
                result.append({"name": para["Package"], "version": para["Version"],
                               "arch": para["Architecture"]})
    return sorted(result, key=lambda p: p["name"])


def cleanup(root):
    """Remove what configuring left that is host- or time-dependent."""
    for rel in ("var/cache/debconf/config.dat-old", "var/cache/debconf/templates.dat-old",
                "var/lib/dpkg/status-old", "var/lib/dpkg/diversions-old", "var/log/dpkg.log",
                "var/log/alternatives.log", "etc/machine-id", "etc/resolv.conf", "etc/hostname"):
        p = os.path.join(root, rel)
        if os.path.lexists(p):
            os.unlink(p)


def build_rootfs(ctx):
    pkgs = fetch.packages(ctx)["root"]
    final = ctx.path("rootfs")
    tmp = final + ".tmp"
    for d in (tmp, final):
        if os.path.lexists(d):
            shutil.rmtree(d)
    os.makedirs(tmp)
    if os.path.exists(ctx.path("rootfs.log")):
        os.unlink(ctx.path("rootfs.log"))
    debs = [p["deb"] for p in pkgs]
    unpack(tmp, debs)
    link_applets(tmp, busybox_applets(ctx, tmp))
    configure(ctx, tmp, debs)
    state = installed(tmp)
    missing = sorted({p["name"] for p in pkgs} - {p["name"] for p in state})
    if missing:
        raise BuildError("dpkg did not finish installing %s; see %s" % (
            ", ".join(missing), ctx.path("rootfs.log")))
    cleanup(tmp)
    os.rename(tmp, final)
    with open(ctx.path("rootfs.json"), "w") as f:
        json.dump(state, f, indent=1)


def tasks(ctx):
    yield {
        "name": "rootfs",
        "doc": "unpack the .debs and configure them under proot + qemu-user into build/NAME/rootfs",
        "actions": [(build_rootfs, [ctx])],
        "file_dep": [ctx.path("fetch", "packages.json"), __file__],
        "targets": [ctx.path("rootfs.json")],
        "clean": [(shutil.rmtree, [ctx.path("rootfs"), True])],
    }
