"""rootfs: unpack the fetched .debs and configure them under proot + qemu-user.

The root is assembled the way Debian's bootstrappers do it (merged /usr, every .deb
unpacked, then ``dpkg --install`` inside the root), but the second half runs under
``proot -q qemu-<arch>-static``: no chroot, no binfmt_misc registration, the host is
left as it was. Busybox applet links are made first so maintainer scripts find a
shell and the usual tools.

Output: ``build/NAME/rootfs/`` (renamed into place only when complete) and
``build/NAME/rootfs.json`` (dpkg's view of what is installed, for the manifest).
"""

import os
import shutil

from debian import deb822

from . import fetch, stamp
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


# Skipped while dpkg unpacks under emulation: pruned from the image anyway.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/lintian/*")
# Programs that maintainer scripts call many times (one emulated process per certificate);
# diverted to a no-op while configuring, and their job done afterwards on the host.
DIVERTED = ("/usr/sbin/update-ca-certificates",)


def configure(ctx, root, debs):
    """``dpkg --install`` every .deb inside the root (under proot), in one transaction."""
    cfg = os.path.join(root, "etc/dpkg/dpkg.cfg.d")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "migos-build"), "w") as f:
        f.write("".join("path-exclude=%s\n" % p for p in DPKG_EXCLUDES) + "force-unsafe-io\n")
    for path in DIVERTED:
        proot(ctx, root, "dpkg-divert", "--local", "--rename", "--add", path, log_file=ctx.path("rootfs.log"))
        with open(os.path.join(root, path.lstrip("/")), "w") as f:
            f.write("#!/bin/sh\n# MIGOS build: diverted while configuring (stages/rootfs.py)\nexit 0\n")
        os.chmod(os.path.join(root, path.lstrip("/")), 0o755)
    archives = os.path.dirname(debs[0])
    inside = ["/debs/" + os.path.basename(d) for d in debs]
    proot(ctx, root, "dpkg", "--install", "--force-depends", "--force-confdef", *inside,
          binds=("%s:/debs" % archives,), log_file=ctx.path("rootfs.log"))
    proot(ctx, root, "dpkg", "--configure", "-a", log_file=ctx.path("rootfs.log"))
    for path in DIVERTED:
        os.unlink(os.path.join(root, path.lstrip("/")))
        proot(ctx, root, "dpkg-divert", "--local", "--rename", "--remove", path, log_file=ctx.path("rootfs.log"))
    os.unlink(os.path.join(cfg, "migos-build"))
    if os.path.exists(os.path.join(root, "etc/ca-certificates.conf")):
        write_ca_bundle(root)


def ca_bundle(conf_text, read):
    """The text of /etc/ssl/certs/ca-certificates.crt: every certificate ca-certificates.conf
    enables, in its order, as update-ca-certificates concatenates them. Pure (``read(rel)``)."""
    out = []
    for line in conf_text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        pem = read(line)
        out.append(pem if pem.endswith("\n") else pem + "\n")
    return "".join(out)


def write_ca_bundle(root):
    share = os.path.join(root, "usr/share/ca-certificates")
    with open(os.path.join(root, "etc/ca-certificates.conf")) as f:
        conf = f.read()
    bundle = ca_bundle(conf, lambda rel: open(os.path.join(share, rel)).read())
    if "BEGIN CERTIFICATE" not in bundle:
        raise BuildError("no certificate enabled in the root's /etc/ca-certificates.conf")
    certs = os.path.join(root, "etc/ssl/certs")
    os.makedirs(certs, exist_ok=True)
    with open(os.path.join(certs, "ca-certificates.crt"), "w") as f:
        f.write(bundle)


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
    stamp.write(ctx.path("rootfs.json"), [final], packages=state)


def tasks(ctx):
    yield {
        "name": "rootfs",
        "doc": "unpack the .debs and configure them under proot + qemu-user into build/NAME/rootfs",
        "actions": [(build_rootfs, [ctx])],
        "file_dep": [ctx.path("fetch", "packages.json"), __file__],
        "targets": [ctx.path("rootfs.json")],
        "clean": [(shutil.rmtree, [ctx.path("rootfs"), True])],
    }
