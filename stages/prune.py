"""prune: copy the configured root without what a RAM-only migrator never reads.

``plan`` decides from a file list alone (pure, unit-tested): documentation, man pages,
locales, caches, apt and dpkg state, Python's test suite and GUI/dev modules, and every
file owned only by a build-only package (dpkg, perl-base, …). Then ``check_elves``
reads every ELF with pyelftools and fails the build naming any needed library that
pruning removed (or that was never there).
"""

import fnmatch
import glob
import os
import shutil

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from . import stamp
from .tools import BuildError

# Paths (relative, glob) removed whatever package owns them.
PRUNE_GLOBS = (
    "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
    "usr/share/lintian/*", "usr/share/bug/*", "usr/share/common-licenses/*",
    "usr/share/bash-completion/*", "usr/share/zsh/*", "usr/share/menu/*", "usr/share/pixmaps/*",
    "usr/share/perl5/*", "usr/share/debconf/*", "usr/share/python3/debian_defaults",
    "var/cache/*", "var/lib/apt/*", "var/lib/dpkg/*", "var/log/*",
    "usr/lib/python3.*/test/*", "usr/lib/python3.*/idlelib/*", "usr/lib/python3.*/tkinter/*",
    "usr/lib/python3.*/turtledemo/*", "usr/lib/python3.*/ensurepip/*", "usr/lib/python3.*/lib2to3/*",
    "usr/lib/python3.*/pydoc_data/*", "usr/lib/python3.*/distutils/*", "usr/lib/python3.*/venv/*",
    "usr/lib/python3.*/config-*/*", "usr/lib/python3.*/unittest/*", "usr/lib/python3.*/sqlite3/*",
    "usr/lib/python3.*/curses/*", "usr/lib/python3.*/dbm/*", "usr/lib/python3.*/xmlrpc/*",
    "usr/lib/python3.*/msilib/*", "usr/lib/python3.*/lib-dynload/_test*",
    "usr/lib/python3.*/lib-dynload/_tkinter*", "usr/lib/python3.*/lib-dynload/_sqlite3*",
    "usr/lib/python3.*/lib-dynload/_curses*", "usr/lib/python3.*/lib-dynload/_dbm*",
    "usr/lib/python3.*/lib-dynload/_gdbm*", "usr/lib/python3.*/lib-dynload/xxlimited*",
    "*/__pycache__/*.opt-1.pyc", "*/__pycache__/*.opt-2.pyc",
    "usr/include/*", "usr/lib/*/pkgconfig/*", "usr/share/gcc/*", "usr/share/gdb/*",
    "usr/lib/*/gconv/*", "usr/share/i18n/*", "usr/share/zoneinfo/*",
    "etc/cron.daily/*", "etc/logrotate.d/*",
)
# Kept even when a build-only package owns them (shared with the runtime).
KEEP = ("etc/ld.so.cache", "etc/ld.so.conf", "etc/ld.so.conf.d/*",
        # mtools converts FAT names through iconv (code page 850/437): without these,
        # mcopy fails with "Error converting to codepage 850"
        "usr/lib/*/gconv/gconv-modules", "usr/lib/*/gconv/gconv-modules.cache",
        "usr/lib/*/gconv/gconv-modules.d/*", "usr/lib/*/gconv/IBM850.so", "usr/lib/*/gconv/IBM437.so")


ALIASED = ("bin/", "sbin/", "lib/", "lib32/", "lib64/", "libx32/")


def merged_usr(path):
    """The path of a dpkg-listed file in the merged-/usr root (/lib/x -> usr/lib/x). Pure."""
    return "usr/" + path if path.startswith(ALIASED) else path


def owned_files(root, package):
    """Files dpkg lists for ``package`` in ``root`` (relative paths)."""
    info = os.path.join(root, "var/lib/dpkg/info")
    for lst in [os.path.join(info, package + ".list")] + sorted(glob.glob(os.path.join(info, package + ":*.list"))):
        if os.path.exists(lst):
            with open(lst) as f:
                return [merged_usr(line.strip().lstrip("/")) for line in f
                        if line.strip() not in ("", "/.")]
    raise BuildError("build-only package %s is not installed in the root; fix the target's build_only list"
                     % package)


def plan(files, build_only_files, keep_owned_by_others=()):
    """The subset of ``files`` (relative paths) to remove. Pure.

    ``build_only_files``: files owned by build-only packages; ``keep_owned_by_others``: files
    also owned by a package that stays (never removed on the build-only ground).
    """
    doomed = set()
    build_only = set(build_only_files) - set(keep_owned_by_others)
    for f in files:
        if any(fnmatch.fnmatch(f, g) for g in KEEP):
            continue
        if f in build_only or any(fnmatch.fnmatch(f, g) for g in PRUNE_GLOBS):
            doomed.add(f)
    return doomed


def walk_files(root):
    """Relative paths of every non-directory entry under root (sorted)."""
    out = []
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for n in dirs:
            p = os.path.join(d, n)
            if os.path.islink(p):
                out.append(os.path.relpath(p, root))
        out += [os.path.relpath(os.path.join(d, n), root) for n in sorted(names)]
    return sorted(out)


def library_dirs(root):
    """The directories the dynamic linker searches in this root."""
    dirs = ["lib", "usr/lib"]
    for d in sorted(os.listdir(os.path.join(root, "usr/lib"))):
        if d.endswith("-linux-gnu") or d.endswith("-linux-gnueabihf") or d.endswith("-linux-gnueabi"):
            dirs.append("usr/lib/" + d)
    return dirs


def needed_libraries(path):
    """(interpreter, [DT_NEEDED], [runpath dirs]) of an ELF file, or None if it is not one."""
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return None
        f.seek(0)
        try:
            elf = ELFFile(f)
            interp = None
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    interp = seg.get_interp_name()
            needed, runpath = [], []
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    for tag in sec.iter_tags():
                        if tag.entry.d_tag == "DT_NEEDED":
                            needed.append(tag.needed)
                        elif tag.entry.d_tag in ("DT_RUNPATH", "DT_RPATH"):
                            runpath += getattr(tag, "runpath", getattr(tag, "rpath", "")).split(":")
            return interp, needed, runpath
        except ELFError:
            return None


def check_elves(root):
    """Fail naming the first ELF whose interpreter or needed library is missing from ``root``."""
    search = library_dirs(root)
    problems = []
    for rel in walk_files(root):
        path = os.path.join(root, rel)
        if os.path.islink(path) or not os.path.isfile(path) or rel.endswith(".ko"):
            continue
        info = needed_libraries(path)
        if info is None:
            continue
        interp, needed, runpath = info
        if interp and not os.path.exists(os.path.join(root, interp.lstrip("/"))):
            problems.append("%s needs interpreter %s" % (rel, interp))
        for lib in needed:
            dirs = [r.replace("$ORIGIN", "/" + os.path.dirname(rel)).lstrip("/") for r in runpath if r] + search
            if not any(os.path.exists(os.path.join(root, d, lib)) for d in dirs):
                problems.append("%s needs %s" % (rel, lib))
    if problems:
        raise BuildError("pruned image lacks a library: %s%s; keep the package that ships it" % (
            problems[0], " (and %d more)" % (len(problems) - 1) if len(problems) > 1 else ""))


def build_pruned(ctx):
    src = ctx.path("rootfs")
    out = ctx.path("pruned")
    files = walk_files(src)
    installed = [p["name"] for p in stamp.read(ctx.path("rootfs.json"))["packages"]]
    build_only = set()
    for pkg in ctx.target.build_only:
        build_only.update(owned_files(src, pkg))
    others = set()
    for pkg in installed:
        if pkg not in ctx.target.build_only:
            others.update(owned_files(src, pkg))
    doomed = plan(files, build_only, others)
    if os.path.exists(out):
        shutil.rmtree(out)
    shutil.copytree(src, out, symlinks=True,
                    ignore=lambda d, names: [n for n in names
                                             if os.path.relpath(os.path.join(d, n), src) in doomed])
    check_elves(out)
    stamp.write(ctx.path("pruned.json"), [out], removed=sorted(doomed))


def tasks(ctx):
    yield {
        "name": "prune",
        "doc": "drop docs, locales, caches and build-only packages; check every ELF's libraries",
        "actions": [(build_pruned, [ctx])],
        "file_dep": [ctx.path("rootfs.json"), __file__],
        "targets": [ctx.path("pruned.json")],
        # a changed build_only list changes what is pruned, not necessarily the root
        "uptodate": [_config(ctx)],
        "clean": True,
    }


def _config(ctx):
    from doit.tools import config_changed
    return config_changed({"build_only": ctx.target.build_only})
