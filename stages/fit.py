"""fit: kernel + initramfs + the boards' device trees into ``migos.itb`` (mkimage -f).

``render_its`` is pure: the board table (migos.boards) gives each configuration its
name, dtb and kernel flavour (one kernel image per flavour: kernel-rpi-v6, kernel-rpi-v7,
kernel-rpi-v7l, ...); Raspberry Pi configurations use a kernel loaded at the Pi's address,
the qemu ``virt`` one the primary kernel loaded into virt's RAM. The kernel is stored gzip'd
(deterministic: no name, mtime 0) so U-Boot reads less from the SD card.
"""

import gzip
import os
import shutil

import jinja2

from migos import boards

from . import kernel
from .target import REPO
from .tools import run

TEMPLATE = os.path.join(REPO, "boot", "migos.its.j2")
FIT_ARCH = {"arm64": "arm64", "armhf": "arm", "armel": "arm"}
LOAD = {"rpi": {"arm64": "0x00080000", "armhf": "0x00008000", "armel": "0x00008000"},
        "virt": {"arm64": "0x40400000", "armhf": "0x40008000", "armel": "0x40008000"}}


VIRT_CONFIG = "qemu-virt"


def plan(target, dtb_dir):
    """(kernel nodes, configurations) for the target's boards. Pure.

    Every Pi board gets a configuration with its dtb and the kernel of its flavour
    (``kernel-rpi-FLAVOUR``: raspberrypi layout v6 / v7 / v7l by the board's firmware kernel
    file, debian layout the target's one kernel); ``qemu_virt`` adds one without a dtb (qemu's
    own device tree) booting the primary kernel at virt's address (``kernel-virt``).
    Kernel nodes: [{"node", "flavour", "family"}] in configuration order.
    """
    configs = []
    for key in target.boards:
        b = boards.BY_KEY[key]
        flavour = kernel.board_flavour(b, target)
        fit_config, kernel_file = boards.boot_plan(b, target.bits)
        configs.append({"name": fit_config, "description": b.name, "kernel": "kernel-rpi-" + flavour,
                        "flavour": flavour, "family": "rpi", "kernel_file": kernel_file, "board": key,
                        "dtb": os.path.join(dtb_dir, kernel.dtb_relpath(b, target))})
    if target.qemu_virt:
        configs.append({"name": VIRT_CONFIG, "description": "qemu virt", "kernel": "kernel-virt",
                        "flavour": target.kernel_flavour, "family": "virt", "kernel_file": None,
                        "board": None, "dtb": None})
    nodes = []
    for c in configs:
        if c["kernel"] not in [n["node"] for n in nodes]:
            nodes.append({"node": c["kernel"], "flavour": c["flavour"], "family": c["family"]})
    return nodes, configs


def render_its(ctx_version, target, kernels, ramdisk, dtb_dir):
    """The .its text; ``kernels``: {flavour: (release, path of the gzip'd image)}."""
    nodes, configs = plan(target, dtb_dir)
    images = [{"node": n["node"], "family": n["family"], "flavour": n["flavour"],
               "release": kernels[n["flavour"]][0], "path": kernels[n["flavour"]][1], "compression": "gzip",
               "load": LOAD[n["family"]][target.arch]} for n in nodes]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    with open(TEMPLATE) as f:
        tmpl = env.from_string(f.read())
    return tmpl.render(version=ctx_version, target=target.name, kernels=images, ramdisk=ramdisk,
                       configs=configs, default=configs[0]["name"], fit_arch=FIT_ARCH[target.arch])


def gzip_deterministic(src, dest):
    with open(src, "rb") as fin, open(dest, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            shutil.copyfileobj(fin, gz, 1 << 20)


def build_fit(ctx):
    k = kernel.info(ctx)
    work = ctx.path("fit")
    os.makedirs(work, exist_ok=True)
    kernels = {}
    for flavour in k["needed"]:
        gz = os.path.join(work, "kernel-%s.gz" % flavour)
        gzip_deterministic(k["kernels"][flavour]["image"], gz)
        kernels[flavour] = (k["kernels"][flavour]["release"], gz)
    its = render_its(ctx.version, ctx.target, kernels, ctx.path("initramfs.cpio.zst"), k["dtbs"])
    with open(os.path.join(work, "migos.its"), "w") as f:
        f.write(its)
    out = ctx.path("migos.itb")
    # SOURCE_DATE_EPOCH fixes the FIT's timestamp property
    run("mkimage", "-f", os.path.join(work, "migos.its"), out + ".tmp",
        env={"SOURCE_DATE_EPOCH": str(ctx.source_date_epoch)}, log_file=ctx.path("fit.log"))
    os.replace(out + ".tmp", out)


def tasks(ctx):
    yield {
        "name": "fit",
        "doc": "kernel + initramfs + dtbs into the FIT image migos.itb (sha256 hashes)",
        "actions": [(build_fit, [ctx])],
        "file_dep": [TEMPLATE, __file__, ctx.path("kernel.json"), ctx.path("initramfs.cpio.zst")],
        "targets": [ctx.path("migos.itb")],
        "clean": True,
    }
