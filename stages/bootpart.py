"""bootpart: the exact file tree of a Raspberry Pi FAT boot partition for MIGOS.

    bootcode.bin start*.elf fixup*.dat   firmware (Debian's raspi-firmware)
    config.txt cmdline.txt               from boot/*.j2
    boot.scr                             boot/boot.cmd.j2, compiled by mkimage -T script
    migos.itb                            the FIT image
    migos/u-boot.bin migos/cmdline.txt   what the firmware loads through os_prefix=migos/ (kernel=u-boot.bin)
    migos/kernel.img kernel7.img ...     or, for targets with uboot_defconfigs, one U-Boot per firmware
                                         kernel file and no kernel= line: the firmware picks the board's
    migos/<firmware dtb name>.dtb        each board's upstream dtb under the name the firmware looks for

``plan`` (pure) lists every file and where it comes from; ``build_bootpart`` copies.
Output: build/NAME/boot/.
"""

import os
import shutil

import jinja2

from migos import boards

from . import fit, kernel, stamp, uboot
from .target import REPO
from .tools import run

TEMPLATES = {name: os.path.join(REPO, "boot", name + ".j2") for name in ("config.txt", "cmdline.txt", "boot.cmd")}
ADDR = {"arm64": {"rpi": "0x10000000", "virt": "0x50000000", "comp": "0x0a000000"},
        "armhf": {"rpi": "0x10000000", "virt": "0x48000000", "comp": "0x0a000000"}}
VIRT_CMDLINE = {"arm64": "console=ttyAMA0 rdinit=/init panic=10", "armhf": "console=ttyAMA0 rdinit=/init panic=10"}


def render(name, **values):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    with open(TEMPLATES[name]) as f:
        return env.from_string(f.read()).render(**values)


def template_values(ctx):
    t = ctx.target
    rpi = [boards.BY_KEY[k] for k in t.boards]
    names = [b.fit_config for b in rpi] + ([fit.VIRT_CONFIG] if t.qemu_virt else [])
    return dict(version=ctx.version, target=t.name, arch=t.arch, console=t.console,
                default_conf=names[0], kernel=t.kernel_line(),
                rpi_confs=[(f, b.fit_config) for b in rpi for f in kernel.uboot_fdtfiles(b, t.arch)],
                virt_conf=fit.VIRT_CONFIG if t.qemu_virt else names[0],
                virt_cmdline=VIRT_CMDLINE[t.arch], rpi_addr=ADDR[t.arch]["rpi"],
                virt_addr=ADDR[t.arch]["virt"], comp_addr=ADDR[t.arch]["comp"])


def plan(target, firmware_files, dtb_dir):
    """{path in the boot partition: source path} for the copied files. Pure."""
    files = {os.path.basename(f): f for f in firmware_files}
    for key in target.boards:
        b = boards.BY_KEY[key]
        files["migos/" + b.firmware_dtb] = os.path.join(dtb_dir, kernel.dtb_relpath(b, target))
    return files


def build_bootpart(ctx):
    k = kernel.info(ctx)
    out = ctx.path("boot")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "migos"))
    firmware = kernel.firmware_blobs(k["firmware"]) if k["firmware"] else []
    for dest, src in plan(ctx.target, firmware, k["dtbs"]).items():
        shutil.copy(src, os.path.join(out, dest))
    values = template_values(ctx)
    for name in ("config.txt", "cmdline.txt"):
        with open(os.path.join(out, name), "w") as f:
            f.write(render(name, **values))
    shutil.copy(os.path.join(out, "cmdline.txt"), os.path.join(out, "migos", "cmdline.txt"))
    cmd = ctx.path("boot.cmd")
    with open(cmd, "w") as f:
        f.write(render("boot.cmd", **values))
    run("mkimage", "-A", "arm64" if ctx.target.arch == "arm64" else "arm", "-O", "linux", "-T", "script",
        "-C", "none", "-n", "MIGOS boot script", "-d", cmd, os.path.join(out, "boot.scr"),
        env={"SOURCE_DATE_EPOCH": str(ctx.source_date_epoch)})
    for name in ctx.target.uboots():
        shutil.copy(ctx.path("uboot", name), os.path.join(out, "migos", name))
    shutil.copy(ctx.path("migos.itb"), os.path.join(out, "migos.itb"))
    stamp.write(ctx.path("boot.json"), [out])


def tasks(ctx):
    yield {
        "name": "bootpart",
        "doc": "assemble the Raspberry Pi boot partition tree (firmware, config.txt, boot.scr, U-Boot, FIT)",
        "actions": [(build_bootpart, [ctx])],
        "file_dep": list(TEMPLATES.values()) + [__file__, ctx.path("kernel.json"), ctx.path("migos.itb"),
                                                ] + uboot.outputs(ctx),
        "targets": [ctx.path("boot.json")],
        "uptodate": [_config(ctx)],
        "clean": [(shutil.rmtree, [ctx.path("boot"), True])],
    }


def _config(ctx):
    from doit.tools import config_changed
    return config_changed(repr(sorted(template_values(ctx).items())))
