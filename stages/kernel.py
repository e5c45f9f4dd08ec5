"""kernel: unpack the kernel, its modules and dtbs, and the Pi firmware blobs.

These packages are not installed into the MIGOS root (their maintainer scripts would
build an initramfs of their own or write to /boot/firmware); their files are taken
directly. Two layouts (the target's ``kernel_layout``):

    debian       linux-image-*: /boot/vmlinuz-REL-FLAVOUR, /lib/modules/REL,
                 /usr/lib/linux-image-REL/ (upstream dtbs; arm64 under broadcom/, armhf flat),
                 raspi-firmware: /usr/lib/raspi-firmware/{bootcode.bin,start*.elf,fixup*.dat}
    raspberrypi  raspberrypi-kernel: /boot/kernel.img (ARMv6), kernel7.img, kernel7l.img,
                 kernel8.img, /boot/*.dtb under the firmware's names, /lib/modules/REL+,
                 REL-v7+, REL-v7l+, REL-v8+; raspberrypi-bootloader: /boot/{bootcode.bin,...}

Every kernel flavour the packages provide is found (raspberrypi layout: v6, v7, v7l, v8;
debian layout: every /boot/vmlinuz-REL-FLAVOUR). The boards need some of them (``needed``:
a raspberrypi-layout board boots the flavour of its firmware kernel file, a debian-layout
target runs its one ``kernel_flavour`` everywhere); the target's ``kernel_flavour`` is the
primary one (the plain ``vmlinuz`` artefact and qemu ``virt``).

Output: ``build/NAME/kernel/`` and ``build/NAME/kernel.json``: the primary kernel's release,
vmlinuz and module directory, the dtb and firmware directories, and ``kernels``: for every
flavour found, its release, image, module directory and firmware kernel file.
"""

import glob
import json
import os
import re
import shutil

from migos import boards

from . import fetch, stamp
from .tools import BuildError, pipe_to_tar

FIRMWARE_BLOBS = ("bootcode.bin", "start*.elf", "fixup*.dat")
# raspberrypi layout: flavour -> (image in /boot, pattern of its /lib/modules release)
RPI_KERNELS = {"v6": ("kernel.img", r"^\d+\.\d+\.\d+\+$"), "v7": ("kernel7.img", r"-v7\+$"),
               "v7l": ("kernel7l.img", r"-v7l\+$"), "v8": ("kernel8.img", r"-v8\+$")}
RPI_FLAVOUR_OF_FILE = {image: flavour for flavour, (image, _) in RPI_KERNELS.items()}


def board_flavour(board, target):
    """The kernel flavour ``board`` boots in ``target`` (pure): raspberrypi layout, the one of its
    firmware kernel file (kernel.img -> v6, kernel7.img -> v7, kernel7l.img -> v7l); debian
    layout, the target's one kernel."""
    if target.kernel_layout == "raspberrypi":
        return RPI_FLAVOUR_OF_FILE[boards.firmware_kernel(board, target.bits)]
    return target.kernel_flavour


def needed_flavours(target):
    """The flavours the target's boards and its primary kernel need, primary first (pure)."""
    out = [target.kernel_flavour]
    for key in target.boards:
        f = board_flavour(boards.BY_KEY[key], target)
        if f not in out:
            out.append(f)
    return out


def dtb_relpath(board, target):
    """Where ``board``'s device tree is under the kernel's dtb directory (pure).

    Raspberry Pi kernels ship the firmware's own dtbs; Debian's upstream ones, and Linux 6.1
    keeps 32-bit ARM dtbs flat (vendor directories came in 6.5), arm64 under broadcom/.
    """
    if target.kernel_layout == "raspberrypi":
        return board.firmware_dtb
    return uboot_fdtfile(board, target.arch)


def uboot_fdtfile(board, arch):
    """Debian's dtb file of ``board`` under U-Boot's directory convention (pure): "broadcom/" only on arm64."""
    return board.upstream_dtb if arch == "arm64" else os.path.basename(board.upstream_dtb)


def uboot_fdtfiles(board, arch):
    """Every name U-Boot's Raspberry Pi board code may put in ${fdtfile} on ``board`` (pure): its
    own table's (board.uboot_dtbs, which differ from Linux's for CM1, CM3, Zero 2 W, CM4 and the
    Pi 1 B rev 2), with "broadcom/" on arm64."""
    return ["broadcom/" + n if arch == "arm64" else n for n in board.uboot_dtbs]


def find_kernel(tree, flavour):
    """(release, vmlinuz path) of the single kernel of ``flavour`` in ``tree`` (pure lookup)."""
    found = sorted(glob.glob(os.path.join(tree, "boot", "vmlinuz-*-%s" % flavour)))
    if len(found) != 1:
        raise BuildError("expected one vmlinuz-*-%s in the kernel packages, found %d; check the "
                         "target's extract list" % (flavour, len(found)))
    release = re.sub(r"^vmlinuz-", "", os.path.basename(found[0]))
    return release, found[0]


def find_rpi_kernel(tree, flavour):
    """(release, image path) of a raspberrypi-kernel tree for ``flavour`` (v6, v7, v7l, v8)."""
    if flavour not in RPI_KERNELS:
        raise BuildError("kernel_flavour %r is not a Raspberry Pi kernel; use one of %s" % (
            flavour, ", ".join(RPI_KERNELS)))
    image, pattern = RPI_KERNELS[flavour]
    found = []
    for base in ("lib/modules", "usr/lib/modules"):
        d = os.path.join(tree, base)
        if os.path.isdir(d):
            found += [r for r in os.listdir(d) if re.search(pattern, r)]
    path = os.path.join(tree, "boot", image)
    if len(found) != 1 or not os.path.isfile(path):
        raise BuildError("expected /boot/%s and one module directory matching %s in the kernel package, "
                         "found %s; check the target's extract list" % (image, pattern, found or "none"))
    return found[0], path


def find_kernels(tree, layout):
    """{flavour: (release, image)} of every kernel in an unpacked tree (pure lookup)."""
    out = {}
    if layout == "raspberrypi":
        for flavour, (image, _) in RPI_KERNELS.items():
            try:
                out[flavour] = find_rpi_kernel(tree, flavour)
            except BuildError:
                pass           # no image, or no module directory: not a usable kernel
        return out
    for path in sorted(glob.glob(os.path.join(tree, "boot", "vmlinuz-*"))):
        m = re.match(r"^\d+\.\d+\.\d+-\d+-(.+)$", os.path.basename(path)[len("vmlinuz-"):])
        if m:
            out[m.group(1)] = find_kernel(tree, m.group(1))
    return out


def layout_paths(tree, layout, release):
    """(modules, dtbs, firmware) directories of an unpacked kernel tree (pure)."""
    modules = os.path.join(tree, "lib", "modules", release)
    if not os.path.isdir(modules):
        modules = os.path.join(tree, "usr", "lib", "modules", release)
    if layout == "raspberrypi":
        return modules, os.path.join(tree, "boot"), os.path.join(tree, "boot")
    return (modules, os.path.join(tree, "usr", "lib", "linux-image-" + release),
            os.path.join(tree, "usr", "lib", "raspi-firmware"))


def select_kernels(tree, t):
    """{flavour: {"release", "image", "modules", "file"}} of every kernel in the unpacked ``tree``;
    fails naming the boards when a flavour they need is missing (reads the tree only)."""
    found = find_kernels(tree, t.kernel_layout)
    for flavour in needed_flavours(t):
        if flavour in found:
            continue
        users = [k for k in t.boards if board_flavour(boards.BY_KEY[k], t) == flavour]
        what = "/boot/%s + modules" % RPI_KERNELS[flavour][0] if flavour in RPI_KERNELS else "kernel"
        raise BuildError("no %s %s in the extract packages (needed by %s); found %s; check the target's "
                         "extract list" % (flavour, what, ", ".join(users) or "kernel_flavour",
                                           ", ".join(sorted(found)) or "none"))
    kernels = {}
    for flavour, (release, image) in sorted(found.items()):
        modules, dtbs, firmware = layout_paths(tree, t.kernel_layout, release)
        if not os.path.isdir(modules):
            raise BuildError("the kernel package has no modules directory for %s (%s)" % (release, modules))
        kernels[flavour] = {"release": release, "image": image, "modules": modules,
                            "file": RPI_KERNELS[flavour][0] if t.kernel_layout == "raspberrypi" else None}
    return kernels


def unpack_kernel(ctx):
    t = ctx.target
    tree = ctx.path("kernel")
    if os.path.exists(tree):
        shutil.rmtree(tree)
    os.makedirs(tree)
    for p in fetch.packages(ctx)["extract"]:
        pipe_to_tar(p["deb"], tree)
    kernels = select_kernels(tree, t)
    primary = kernels[t.kernel_flavour]
    _, dtbs, firmware = layout_paths(tree, t.kernel_layout, primary["release"])
    info = {"release": primary["release"], "vmlinuz": primary["image"], "modules": primary["modules"],
            "dtbs": dtbs, "firmware": firmware if firmware_blobs(firmware) else None,
            "kernels": kernels, "needed": needed_flavours(t)}
    if not os.path.isdir(dtbs):
        raise BuildError("the kernel package has no dtbs directory (%s)" % dtbs)
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
