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

import json
import os
import subprocess

import libarchive
from libarchive.entry import FileType

from stages import initramfs, prune
from tests.balena_image import make_old_os_disk
from .qemu import DIST, REPO

BUILD = os.path.realpath(os.path.join(REPO, "build", "debian-arm64"))  # build/ may be a symlink
GUEST_SERVER = "10.0.2.100"
GUEST_PORT = 8080
GUEST_MQTT = "10.0.2.101"            # a second forward: MQTT (port 1883) to a broker on 127.0.0.1

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


OLD_OS_INIT = r"""#!/bin/sh
# the old OS's cmdline.txt ends in console=tty1 (HDMI): say it through the kernel log, which
# every console (the serial one included) prints
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
echo "OLD OS BOOTED cmdline=$(cat /proc/cmdline)" > /dev/kmsg
poweroff -f
"""


def balena_initrd(path, init_text=BALENA_INIT):
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
        init = init_text.encode()
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
    return {"config.txt": b"# synthetic balenaOS: the firmware starts U-Boot\nkernel=u-boot.bin\n"
                          b"arm_64bit=1\n",
            "boot.scr": boot_script(BALENA_BOOT_CMD, os.path.join(work, "balena-boot.scr")),
            "Image": open(os.path.join(DIST, "vmlinuz"), "rb").read(),
            "balena-initrd": open(initrd, "rb").read()}


# --- an old OS prepared by the real `migos init` ---------------------------------------------

def _dhcp(keyfile_text):
    """The keyfile with its [ipv4] section made DHCP (qemu's user network hands out addresses)."""
    head, _, rest = keyfile_text.partition("[ipv4]")
    tail = rest[rest.index("\n["):] if "\n[" in rest else ""
    return head + "[ipv4]\nmethod=auto\n" + tail


def old_os_disk(work, image_url, config, size_mib=4000, p1_size_mib=96, init_args=(), root_files=None):
    """An SD card image of a Raspberry Pi OS bookworm device (tests/os_fixtures.py) whose boot
    partition was prepared by the real ``migos init`` with the built boot tarball, to migrate
    from ``image_url``. The old OS itself boots too: kernel8.img is Debian's kernel and
    initramfs8 a tiny init printing ``OLD OS BOOTED``. The disk is a sparse 4000 MiB file, so
    that init's disk-size check for balenaOS passes unchanged. ``root_files``: {path under
    the old root: bytes} written 0600 before init (e.g. the fleet agent's configuration and
    key). Returns (disk, info, original boot files)."""
    import os_fixtures as fx
    from conftest import run_migos
    root = fx.make_tree(os.path.join(work, "old-root"), "bookworm")
    with open(os.path.join(root, "etc/NetworkManager/system-connections/Wired connection 1.nmconnection"),
              "w") as f:
        f.write(_dhcp(fx.NM_BOOKWORM_ETH))
    for rel, data in (root_files or {}).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    boot = os.path.join(root, "boot", "firmware")
    with open(os.path.join(boot, "kernel8.img"), "wb") as f:
        f.write(open(os.path.join(DIST, "vmlinuz"), "rb").read())
    balena_initrd(os.path.join(boot, "initramfs8"), OLD_OS_INIT)
    original = tree_files(boot)
    cfg = os.path.join(work, "config.json")
    with open(cfg, "w") as f:
        json.dump(config, f)
    disk = os.path.join(work, "sd.img")
    kw = dict(size_mib=size_mib, p1_start_mib=4, p1_size_mib=p1_size_mib, base_files=False)
    make_old_os_disk(disk, p1_files=original, **kw)
    tarball = os.path.join(DIST, "migos-boot-debian-arm64.tar.gz")
    r = run_migos("init", "--root", root, "-c", cfg, "-i", image_url, "--migos-tarball", tarball,
                  "--disk", disk, "--no-api-check", "--no-vpn-check", "--log-level", "warn", *init_args)
    assert r.returncode == 0, r.stderr[-3000:]
    info = make_old_os_disk(disk, p1_files=tree_files(boot), **kw)
    return disk, info, original


def tree_files(top):
    files = {}
    for d, _, names in os.walk(top):
        for n in names:
            full = os.path.join(d, n)
            files[os.path.relpath(full, top)] = open(full, "rb").read()
    return files


# --- the firmware: what the Pi's boot ROM + start.elf would start -------------------------

def read_boot_file(disk, name):
    """A file of the disk's first FAT partition (mtools), or None."""
    from migos.runtime import bootdisk
    with open(disk, "rb") as f:
        part = bootdisk.first_fat_partition(f.read(512))
    if part is None:
        return None
    r = subprocess.run(["mtype", "-i", "%s@@%d" % (disk, part[0]), "::" + name],
                       capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    return r.stdout if r.returncode == 0 else None


def firmware_settings(text):
    """The [all]/unconditional settings of a config.txt (conditional sections such as [pi4]
    are skipped: the emulated board matches none of them)."""
    out, active = {}, True
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            active = line == "[all]"
            continue
        if not active:
            continue
        if line.startswith("initramfs "):
            out["initramfs"] = line.split()[1]
        elif "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def firmware_argv(disk, work, forward=None, extra=(), mem=1024):
    """qemu argv for what the Pi firmware would boot from ``disk``: config.txt's kernel (with
    os_prefix, the initramfs it names or auto_initramfs's, and cmdline.txt). A ``kernel`` of
    u-boot.bin (MIGOS and balenaOS) is played by Debian's U-Boot for virt, which then runs
    the partition's boot.scr; any other kernel is booted directly."""
    from .qemu import UBOOT_QEMU, qemu_virt
    text = read_boot_file(disk, "config.txt")
    assert text is not None, "no config.txt on the first FAT partition: the firmware would not boot"
    conf = firmware_settings(text.decode("utf-8", "replace"))
    prefix = conf.get("os_prefix", "")
    kernel = conf.get("kernel", "kernel8.img" if conf.get("arm_64bit") == "1" else "kernel7.img")
    if kernel.endswith("u-boot.bin"):
        return qemu_virt(bios=UBOOT_QEMU, disk=disk, forward=forward, extra=extra, mem=mem)
    initrd = conf.get("initramfs")
    if initrd is None and conf.get("auto_initramfs") == "1":
        initrd = kernel.replace("kernel", "initramfs").replace(".img", "")
    cmdline = (read_boot_file(disk, prefix + conf.get("cmdline", "cmdline.txt")) or b"").decode()
    paths = {}
    for key, name in (("kernel", kernel), ("initrd", initrd)):
        if name:
            data = read_boot_file(disk, prefix + name)
            assert data is not None, "config.txt names %s, which is not on the boot partition" % name
            paths[key] = os.path.join(work, "fw-" + key)
            with open(paths[key], "wb") as f:
                f.write(data)
    # the firmware resolves serial0 to the board's UART; on virt that is ttyAMA0
    append = cmdline.strip().replace("serial0", "ttyAMA0")
    return qemu_virt(kernel=paths["kernel"], initrd=paths.get("initrd"), append=append, disk=disk,
                     forward=forward, extra=extra, mem=mem)
