"""uboot: U-Boot for the Raspberry Pi, built from Debian's own ``u-boot`` source package.

Debian's prebuilt u-boot-rpi has FIT support off (it refuses any FIT), so MIGOS builds
the same source with the target's defconfig plus ``boot/uboot.config`` (FIT, FIT
signatures, verbose FIT messages, FAT, a boot command that runs boot.scr). The source
comes through apt (deb-src of the same signed archive, hashes checked) and is cached
under build/cache/; the build is reproducible (SOURCE_DATE_EPOCH from the source
package's changelog, prefix-mapped paths), so its result is cached too, keyed by
everything it depends on (build/cache/u-boot-builds/KEY/u-boot.bin, shared by targets), like ccache.

A target has one U-Boot (``uboot_defconfig``: build/NAME/uboot/u-boot.bin) or one per
firmware kernel file (``uboot_defconfigs``: build/NAME/uboot/kernel.img, kernel7.img,
kernel7l.img), each built and cached on its own.
"""

import email.utils
import glob
import hashlib
import inspect
import os
import shutil

from debian.changelog import Changelog

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


def download_source(ctx):
    """Debian's u-boot source package (.dsc + tarballs, verified by apt) in the cache; its .dsc path."""
    t = ctx.target
    cache = os.path.join(ctx.cache, "u-boot-src")
    os.makedirs(cache, exist_ok=True)
    src_apt = dict(fetch.apt_dirs(ctx), base=ctx.path("apt-src"), conf=ctx.path("apt-src", "apt.conf"),
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
    return dscs[-1]


def cache_key(dsc, t, defconfig):
    """What u-boot.bin depends on: the source (the .dsc pins every file's hash), defconfig, cross
    compiler and its version, config fragments, the recipe (compile_uboot's code, so that other
    changes to this module keep the cache). Pure but for reading files."""
    h = hashlib.sha256()
    with open(dsc, "rb") as f:
        h.update(f.read())
    compiler = run(t.uboot_cross + "gcc", "--version", quiet=True).splitlines()[0]
    for part in (defconfig, t.uboot_cross, compiler, "\n".join(fragment_lines(t.arch)),
                 inspect.getsource(compile_uboot), inspect.getsource(changelog_epoch)):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:32]


def changelog_epoch(src):
    """The source package's own date: U-Boot's build date comes from it, not from MIGOS's commit."""
    with open(os.path.join(src, "debian", "changelog")) as f:
        block = next(iter(Changelog(f, max_blocks=1)))
    return int(email.utils.parsedate_to_datetime(block.date).timestamp())


def compile_uboot(ctx, dsc, defconfig, dest):
    t = ctx.target
    work = ctx.path("uboot", "work")
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    src, out = os.path.join(work, "src"), os.path.join(work, "out")
    run("dpkg-source", "--no-check", "-x", dsc, src, log_file=ctx.path("uboot.log"))
    make = ["-C", src, "O=" + out, "CROSS_COMPILE=" + t.uboot_cross, "-j%d" % (os.cpu_count() or 2),
            "KCFLAGS=-ffile-prefix-map=%s=. -ffile-prefix-map=%s=." % (src, out)]
    env = {"SOURCE_DATE_EPOCH": str(changelog_epoch(src)), "LC_ALL": "C", "TZ": "UTC"}
    run("make", *make, defconfig, env=env, log_file=ctx.path("uboot.log"))
    with open(os.path.join(out, ".config"), "a") as f:
        f.write("\n".join(fragment_lines(t.arch)) + "\n")
    run("make", *make, "olddefconfig", env=env, log_file=ctx.path("uboot.log"))
    with open(os.path.join(out, ".config")) as f:
        config = f.read().splitlines()
    for line in fragment_lines(t.arch):
        if line.endswith("=y") and line not in config:
            raise BuildError("U-Boot option %s did not stick (a dependency is off); fix boot/uboot.config"
                             % line)
    run("make", *make, "u-boot.bin", env=env, log_file=ctx.path("uboot.log"))
    shutil.copy(os.path.join(out, "u-boot.bin"), dest)
    shutil.rmtree(work)


def build_uboot(ctx):
    """Each U-Boot from the cache when the same source, config and recipe built it before; else compile."""
    t = ctx.target
    dsc = download_source(ctx)
    os.makedirs(ctx.path("uboot"), exist_ok=True)
    lines = [os.path.basename(dsc)]
    for name, defconfig in t.uboots().items():
        # shared by every target whose archives carry the same source (Raspbian rebuilds Debian's)
        key = cache_key(dsc, t, defconfig)
        cached = os.path.join(os.path.dirname(ctx.cache), "u-boot-builds", key, "u-boot.bin")
        if not os.path.exists(cached):
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            compile_uboot(ctx, dsc, defconfig, cached + ".tmp")
            os.replace(cached + ".tmp", cached)
        shutil.copy(cached, ctx.path("uboot", name))
        lines.append("%s %s %s" % (name, defconfig, key))
    with open(ctx.path("uboot", "source.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def outputs(ctx):
    """build/NAME/uboot/FILE for every U-Boot of the target."""
    return [ctx.path("uboot", name) for name in ctx.target.uboots()]


def tasks(ctx):
    yield {
        "name": "uboot",
        "doc": "build U-Boot for the Pi from Debian's u-boot source with FIT verification",
        "actions": [(build_uboot, [ctx])],
        "file_dep": fragments(ctx.target.arch) + [__file__],
        "targets": outputs(ctx),
        "uptodate": [_config(ctx)],
        "clean": [(shutil.rmtree, [ctx.path("uboot"), True])],
    }


def _config(ctx):
    from doit.tools import config_changed
    t = ctx.target
    return config_changed({"defconfigs": t.uboots(), "cross": t.uboot_cross,
                           "archives": [a.__dict__ for a in t.archives]})
