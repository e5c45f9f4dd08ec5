"""overlay: the MIGOS files that go into the image on top of the Debian root.

``/init`` (packages/init/init), the ``migos`` Python package (packages/migos/migos,
with bytecode compiled here: unchecked-hash .pyc files, reproducible, so that the device
never compiles them under a slow CPU at every boot), ``/usr/sbin/migos``, ``/etc/migos-release`` (version, target) and
``/usr/lib/migos/modules.load`` (the modules /init loads). Output: build/NAME/overlay/.
"""

import glob
import os
import py_compile
import shutil
import sys

from . import stamp, vendor
from .target import REPO

MIGOS_SRC = os.path.join(REPO, "packages", "migos", "migos")
INIT_SRC = os.path.join(REPO, "packages", "init", "init")
UDHCPC_SRC = os.path.join(REPO, "packages", "init", "udhcpc.script")
PY_DEST = "usr/lib/python3/dist-packages/migos"


def source_files():
    """Every file of the migos package that goes into the image (sorted, pure)."""
    files = []
    for d, dirs, names in os.walk(MIGOS_SRC):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        files += [os.path.join(d, n) for n in sorted(names) if n.endswith(".py")]
    return files


def release_text(ctx):
    return "".join('%s="%s"\n' % kv for kv in (
        ("MIGOS_VERSION", ctx.version), ("MIGOS_TARGET", ctx.target.name),
        ("MIGOS_ARCH", ctx.target.arch), ("SOURCE_DATE_EPOCH", ctx.source_date_epoch)))


def target_python(rootfs):
    """'3.11' for the python3.11 the image's root holds, or None."""
    found = sorted(glob.glob(os.path.join(rootfs, "usr", "bin", "python3.*")))
    names = [os.path.basename(p)[len("python"):] for p in found]
    names = [n for n in names if n.replace(".", "").isdigit()]
    return names[-1] if names else None


def compile_tree(top, dest_root):
    """.pyc for every .py under ``top`` (in __pycache__, as the image's python would write them),
    with ``co_filename`` the path in the image and no timestamps (unchecked-hash)."""
    for d, _, names in os.walk(top):
        for n in sorted(names):
            if n.endswith(".py"):
                src = os.path.join(d, n)
                py_compile.compile(src, cfile=None, dfile="/" + os.path.relpath(src, dest_root),
                                   doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def build_overlay(ctx):
    out = ctx.path("overlay")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    shutil.copy(INIT_SRC, os.path.join(out, "init"))
    os.chmod(os.path.join(out, "init"), 0o755)
    for src in source_files():
        dest = os.path.join(out, PY_DEST, os.path.relpath(src, MIGOS_SRC))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(src, dest)
    for src, rel in vendor.files():     # paho-mqtt for ``migos agent``
        dest = os.path.join(out, os.path.dirname(PY_DEST), rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(src, dest)
    want = target_python(ctx.path("rootfs"))
    have = "%d.%d" % sys.version_info[:2]
    if want == have:             # bytecode is the same for one minor version on every arch
        compile_tree(os.path.dirname(os.path.join(out, PY_DEST)), out)
    else:
        print("overlay: the image has python %s, the build host %s: no precompiled .pyc"
              % (want, have))
    write(os.path.join(out, "usr/sbin/migos"), '#!/bin/sh\nexec /usr/bin/python3 -m migos "$@"\n', 0o755)
    write(os.path.join(out, "usr/lib/migos/runtime"), "#!/bin/sh\nexec /usr/bin/python3 -m migos.runtime\n", 0o755)
    os.makedirs(os.path.join(out, "usr/share/migos"), exist_ok=True)
    shutil.copy(UDHCPC_SRC, os.path.join(out, "usr/share/migos/udhcpc.script"))
    os.chmod(os.path.join(out, "usr/share/migos/udhcpc.script"), 0o755)
    write(os.path.join(out, "etc/migos-release"), release_text(ctx))
    # one module set per kernel release; /init loads by name, modprobe finds the running kernel's
    per_release = stamp.read(ctx.path("modules.json"))["modules"]
    names = {os.path.basename(p)[:-3] for paths in per_release.values() for p in paths}
    write(os.path.join(out, "usr/lib/migos/modules.load"), "\n".join(sorted(names)) + "\n")
    stamp.write(ctx.path("overlay.json"), [out], version=ctx.version)


def tasks(ctx):
    yield {
        "name": "overlay",
        "doc": "the MIGOS files (init, migos package, release) for the image",
        "actions": [(build_overlay, [ctx])],
        "file_dep": [INIT_SRC, UDHCPC_SRC, __file__, ctx.path("modules.json"),
                     ctx.path("rootfs.json")] + source_files() +
        [src for src, _ in vendor.files()],
        "targets": [ctx.path("overlay.json")],
        "uptodate": [_config(ctx)],
        "clean": True,
    }


def _config(ctx):
    from doit.tools import config_changed
    return config_changed(release_text(ctx))
