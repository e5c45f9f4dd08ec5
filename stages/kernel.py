"""kernel: unpack the kernel, its modules and dtbs, and the Pi firmware blobs.

These packages are not installed into the MIGOS root (their maintainer scripts would
build an initramfs of their own or write to /boot/firmware); their files are taken
directly. Output: ``build/NAME/kernel/`` and ``build/NAME/kernel.json`` naming the
kernel release, the vmlinuz, the dtb directory and the firmware directory.
"""

import glob
import json
import os
import re
import shutil

from . import fetch, stamp
from .tools import BuildError, pipe_to_tar

FIRMWARE_BLOBS = ("bootcode.bin", "start*.elf", "fixup*.dat")


def find_kernel(tree, flavour):
    """(release, vmlinuz path) of the single kernel of ``flavour`` in ``tree`` (pure lookup)."""
    found = sorted(glob.glob(os.path.join(tree, "boot", "vmlinuz-*-%s" % flavour)))
    if len(found) != 1:
        raise BuildError("expected one vmlinuz-*-%s in the kernel packages, found %d; check the "
                         "target's extract list" % (flavour, len(found)))
    release = re.sub(r"^vmlinuz-", "", os.path.basename(found[0]))
    return release, found[0]


def unpack_kernel(ctx):
    tree = ctx.path("kernel")
    if os.path.exists(tree):
        shutil.rmtree(tree)
    os.makedirs(tree)
    for p in fetch.packages(ctx)["extract"]:
        pipe_to_tar(p["deb"], tree)
    release, vmlinuz = find_kernel(tree, ctx.target.kernel_flavour)
    modules = os.path.join(tree, "lib", "modules", release)
    if not os.path.isdir(modules):
        modules = os.path.join(tree, "usr", "lib", "modules", release)
    dtbs = os.path.join(tree, "usr", "lib", "linux-image-" + release)
    firmware = os.path.join(tree, "usr", "lib", "raspi-firmware")
    info = {"release": release, "vmlinuz": vmlinuz, "modules": modules, "dtbs": dtbs,
            "firmware": firmware if os.path.isdir(firmware) else None}
    for key in ("modules", "dtbs"):
        if not os.path.isdir(info[key]):
            raise BuildError("the kernel package has no %s directory (%s)" % (key, info[key]))
    stamp.write(ctx.path("kernel.json"), [tree], **info)


def info(ctx):
    with open(ctx.path("kernel.json")) as f:
        return json.load(f)


def firmware_blobs(firmware_dir):
    files = []
    for pattern in FIRMWARE_BLOBS:
        files += glob.glob(os.path.join(firmware_dir, pattern))
    return sorted(files)


def tasks(ctx):
    yield {
        "name": "kernel",
        "doc": "unpack the kernel, modules, dtbs and Raspberry Pi firmware into build/NAME/kernel",
        "actions": [(unpack_kernel, [ctx])],
        "file_dep": [ctx.path("fetch", "packages.json"), __file__],
        "targets": [ctx.path("kernel.json")],
        "clean": True,
    }
