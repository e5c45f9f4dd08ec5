"""An emulated device for whole-migration tests: disks, a tiny "balenaOS", and the machine.

The machine is qemu ``virt`` (TCG) with Debian's u-boot-qemu as its firmware. It was chosen
over ``-M raspi3b`` for the migration tests because the emulated SD card moves about
3 MiB/s and a raspi3b boot takes four times longer, which would put a power-cut matrix far
beyond the suite's time budget; the raspi3b chain itself is proven in test_boot.py. U-Boot
plays the Pi firmware's part faithfully where it matters here: it reads the MBR of the
disk, takes the *first* FAT partition and runs the boot.scr it finds there, so after the
one-sector MBR switch it boots whatever the new p1 holds.

The "balenaOS" image is synthetic (tests/balena_image.py) but really boots: its resin-boot
holds a boot.scr, Debian's kernel and a tiny initramfs built here from the image's own
busybox and modules, whose init mounts resin-boot and prints
``BALENA BOOTED hostname=<hostname> uuid=<uuid>`` from the injected config.json.
"""

import os
import subprocess

import libarchive
from libarchive.entry import FileType

from stages import initramfs, prune
from .qemu import DIST, REPO

BUILD = os.path.realpath(os.path.join(REPO, "build", "debian-arm64"))  # build/ may be a symlink
GUEST_SERVER = "10.0.2.100"
GUEST_PORT = 8080

BALENA_INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
for m in virtio_mmio virtio_blk fat vfat nls_cp437 nls_iso8859-1 nls_ascii; do
    insmod /modules/$m.ko 2>/dev/null
done
mkdir -p /boot
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda1 ] && break; sleep 0.3; done
mount -t vfat -o ro /dev/vda1 /boot || echo "BALENA cannot mount resin-boot"
host=$(sed -n 's/.*"hostname": *"\([^"]*\)".*/\1/p' /boot/config.json)
uuid=$(sed -n 's/.*"uuid": *"\([^"]*\)".*/\1/p' /boot/config.json)
echo "BALENA BOOTED hostname=$host uuid=$uuid"
poweroff -f
"""

BALENA_BOOT_CMD = """echo "balenaOS (synthetic) boot.scr"
load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} Image
load ${devtype} ${devnum}:${distro_bootpart} ${ramdisk_addr_r} balena-initrd
booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
"""


def _needed_files(root, binary):
    """``binary`` and the shared libraries it needs, relative to ``root`` (via pyelftools)."""
    out = {binary}
    todo = [binary]
    dirs = prune.library_dirs(root)
    while todo:
        rel = todo.pop()
        info = prune.needed_libraries(os.path.join(root, rel))
        if not info:
            continue
        interp, needed, _ = info
        names = [interp.lstrip("/")] if interp else []
        for lib in needed:
            for d in dirs:
                if os.path.exists(os.path.join(root, d, lib)):
                    names.append(os.path.join(d, lib))
                    break
        for n in names:
            real = os.path.relpath(os.path.realpath(os.path.join(root, n)), root)
            for p in (n, real):
                if p not in out:
                    out.add(p)
                    todo.append(p)
    return sorted(out)


def balena_initrd(path):
    """A tiny initramfs from the built image's busybox, libc and modules (newc, gzip)."""
    root = os.path.join(BUILD, "pruned")
    mods = os.path.join(BUILD, "modules", "usr", "lib", "modules")
    release = os.listdir(mods)[0]
    kos = {}
    for d, _, names in os.walk(os.path.join(mods, release)):
        for n in names:
            if n.endswith(".ko"):
                kos[n[:-3].replace("-", "_")] = os.path.join(d, n)
    files = {}                                   # path in the initrd -> host file
    for rel in _needed_files(root, "usr/bin/busybox"):
        full = os.path.realpath(os.path.join(root, rel))
        if os.path.isfile(full):
            files[os.path.relpath(full, root)] = full
    files["lib/ld-linux-aarch64.so.1"] = os.path.realpath(os.path.join(root, "lib/ld-linux-aarch64.so.1"))
    files["bin/busybox"] = os.path.join(root, "usr/bin/busybox")
    for name in ("virtio_mmio", "virtio_blk", "fat", "vfat", "nls_cp437", "nls_iso8859_1", "nls_ascii"):
        if name in kos:
            files["modules/%s.ko" % name.replace("nls_iso8859_1", "nls_iso8859-1")] = kos[name]
    dirs = sorted({os.path.dirname(p) for p in files} | {"dev", "proc", "bin"})
    with libarchive.file_writer(path, "cpio_newc", "gzip") as arc:
        for d in sorted({"/".join(d.split("/")[:i]) for d in dirs for i in range(1, len(d.split("/")) + 1)}):
            arc.add_file_from_memory(d, 0, b"", filetype=FileType.DIRECTORY, permission=0o755)
        for rel in sorted(files):
            data = open(files[rel], "rb").read()
            arc.add_file_from_memory(rel, len(data), data, permission=0o755)
        for applet in ("sh", "mount", "insmod", "sed", "echo", "poweroff", "mkdir", "sleep", "cat"):
            initramfs.add_symlink(arc, "bin/" + applet, "busybox", 0)
        init = BALENA_INIT.encode()
        arc.add_file_from_memory("init", len(init), init, permission=0o755)


def boot_script(text, dest):
    src = dest + ".cmd"
    with open(src, "w") as f:
        f.write(text)
    subprocess.run(["mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-d", src, dest],
                   check=True, capture_output=True)
    os.unlink(src)
    return open(dest, "rb").read()


def bootable_balena_files(work):
    """resin-boot files that make the synthetic balenaOS image boot under U-Boot on virt."""
    initrd = os.path.join(work, "balena-initrd")
    balena_initrd(initrd)
    return {"boot.scr": boot_script(BALENA_BOOT_CMD, os.path.join(work, "balena-boot.scr")),
            "Image": open(os.path.join(DIST, "vmlinuz"), "rb").read(),
            "balena-initrd": open(initrd, "rb").read()}


def migos_boot_files():
    """The built MIGOS boot partition tree as {path: bytes} (what `migos init` installs)."""
    top = os.path.join(DIST, "boot")
    files = {}
    for d, _, names in os.walk(top):
        for n in names:
            full = os.path.join(d, n)
            files[os.path.relpath(full, top)] = open(full, "rb").read()
    return files
