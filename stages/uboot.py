"""uboot: U-Boot for the Raspberry Pi, built from Debian's own ``u-boot`` source package.

Debian's prebuilt u-boot-rpi has FIT support off (it refuses any FIT), so MIGOS builds
the same source with the target's defconfig plus ``boot/uboot.config`` (FIT, FIT
signatures, verbose FIT messages, FAT, a boot command that runs boot.scr). The source
comes through apt (deb-src of the same signed archive, hashes checked) and is cached
under build/cache/; the build is reproducible (SOURCE_DATE_EPOCH, prefix-mapped paths).
Output: build/NAME/uboot/u-boot.bin.
"""

import glob
import hashlib
import os
import shutil

from . import fetch
from .target import REPO
from .tools import BuildError, run

FRAGMENT = os.path.join(REPO, "boot", "uboot.config")


def fragments(arch):
    """boot/uboot.config, then boot/uboot-ARCH.config if there is one."""
    arch_file = os.path.join(REPO, "boot", "uboot-%s.config" % arch)
    return [FRAGMENT] + ([arch_file] if os.path.exists(arch_file) else [])


def fragment_lines(arch):
    lines = []
    for path in fragments(arch):
        with open(path) as f:
            lines += [l.strip() for l in f if l.strip() and not l.startswith("#")]
    return lines


def build_uboot(ctx):
    t = ctx.target
    if not t.uboot_defconfig:
        raise BuildError("target %s has no uboot_defconfig" % t.name)
    cache = os.path.join(ctx.cache, "u-boot-src")
    os.makedirs(cache, exist_ok=True)
    dirs = fetch.apt_dirs(ctx)
    src_apt = dict(dirs, base=ctx.path("apt-src"), conf=ctx.path("apt-src", "apt.conf"),
                   sources=ctx.path("apt-src", "sources.list"), status=ctx.path("apt-src", "status"),
                   lists=os.path.join(ctx.cache, "lists-src"))
    for d in (os.path.join(src_apt["lists"], "partial"), os.path.join(src_apt["base"], "cache"),
              os.path.join(src_apt["base"], "state")):
        os.makedirs(d, exist_ok=True)
    with open(src_apt["conf"], "w") as f:
        f.write(fetch.apt_config(t, src_apt))
    with open(src_apt["sources"], "w") as f:
        f.write(fetch.sources_list(t, deb_src=True, keyrings=fetch.install_keyrings(t, src_apt["base"])))
    open(src_apt["status"], "w").close()
    fetch.update(ctx, src_apt)
    run("apt-get", "-q", "source", "--download-only", "u-boot", cwd=cache,
        env={"APT_CONFIG": src_apt["conf"], "LC_ALL": "C"}, log_file=ctx.path("uboot.log"))
    dscs = sorted(glob.glob(os.path.join(cache, "u-boot_*.dsc")))
    if not dscs:
        raise BuildError("apt-get source u-boot left no .dsc in %s" % cache)
    dsc = dscs[-1]
    work = ctx.path("uboot")
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    # Targets whose archives carry the same u-boot source (Raspbian rebuilds Debian's) share one
    # build: build/cache/u-boot-builds/KEY, KEY covering everything that goes into u-boot.bin.
    key = build_key(dsc, t, fragment_lines(t.arch), compiler_version(t), ctx.source_date_epoch)
    shared = os.path.join(os.path.dirname(ctx.cache), "u-boot-builds", key)
    with open(os.path.join(work, "source.txt"), "w") as f:
        f.write(os.path.basename(dsc) + "\n")
    if os.path.isfile(os.path.join(shared, "u-boot.bin")):
        shutil.copy(os.path.join(shared, "u-boot.bin"), os.path.join(work, "u-boot.bin"))
        return
    src = os.path.join(work, "src")
    run("dpkg-source", "--no-check", "-x", dsc, src, log_file=ctx.path("uboot.log"))
    out = os.path.join(work, "out")
    make = ["-C", src, "O=" + out, "CROSS_COMPILE=" + t.uboot_cross, "-j%d" % (os.cpu_count() or 2),
            "KCFLAGS=-ffile-prefix-map=%s=. -ffile-prefix-map=%s=." % (src, out)]
    env = {"SOURCE_DATE_EPOCH": str(ctx.source_date_epoch), "LC_ALL": "C", "TZ": "UTC"}
    run("make", *make, t.uboot_defconfig, env=env, log_file=ctx.path("uboot.log"))
    with open(os.path.join(out, ".config"), "a") as f:
        f.write("\n".join(fragment_lines(t.arch)) + "\n")
    run("make", *make, "olddefconfig", env=env, log_file=ctx.path("uboot.log"))
    config = open(os.path.join(out, ".config")).read().splitlines()
    for line in fragment_lines(t.arch):
        if line.endswith("=y") and line not in config:
            raise BuildError("U-Boot option %s did not stick (a dependency is off); fix boot/uboot.config"
                             % line)
    run("make", *make, "u-boot.bin", env=env, log_file=ctx.path("uboot.log"))
    shutil.copy(os.path.join(out, "u-boot.bin"), os.path.join(work, "u-boot.bin"))
    shutil.rmtree(src)
    shutil.rmtree(out)
    os.makedirs(shared + ".tmp", exist_ok=True)
    shutil.copy(os.path.join(work, "u-boot.bin"), os.path.join(shared + ".tmp", "u-boot.bin"))
    os.replace(shared + ".tmp", shared)


def compiler_version(t):
    return run(t.uboot_cross + "gcc", "--version", quiet=True).splitlines()[0]


def build_key(dsc, t, fragment, compiler, source_date_epoch):
    """sha256 of what decides u-boot.bin: the source (.dsc, which pins every file's hash),
    defconfig, cross compiler and its version, config fragment, SOURCE_DATE_EPOCH."""
    h = hashlib.sha256()
    with open(dsc, "rb") as f:
        h.update(f.read())
    for part in (t.uboot_defconfig, t.uboot_cross, compiler, "\n".join(fragment), str(source_date_epoch)):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:32]


def tasks(ctx):
    yield {
        "name": "uboot",
        "doc": "build U-Boot for the Pi from Debian's u-boot source with FIT verification",
        "actions": [(build_uboot, [ctx])],
        "file_dep": fragments(ctx.target.arch) + [__file__],
        "targets": [ctx.path("uboot", "u-boot.bin")],
        "uptodate": [_config(ctx)],
        "clean": [(shutil.rmtree, [ctx.path("uboot"), True])],
    }


def _config(ctx):
    from doit.tools import config_changed
    t = ctx.target
    return config_changed({"defconfig": t.uboot_defconfig, "cross": t.uboot_cross,
                           "archives": [a.__dict__ for a in t.archives]})
