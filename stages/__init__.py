"""The MIGOS build pipeline, one module per step, in the order the data flows:

    target     which target, which archives, which packages (typed, validated here)
    fetch      resolve and download .debs with apt (signatures verified) into build/cache/
    rootfs     unpack them, configure under proot + qemu-user (the host's binfmt is untouched)
    kernel     unpack the kernel, dtbs and Raspberry Pi firmware (not installed in the root)
    modules    pick the kernel modules the Pi and qemu need, with their dependencies
    overlay    the MIGOS files: the ``migos`` Python package, /init, /etc/migos-release
    prune      drop docs, locales, caches, build-only packages; check every ELF's libraries
    initramfs  pack prune + modules + overlay as a reproducible newc cpio, zstd
    uboot      build U-Boot for the Pi from Debian's source package, with FIT verification
    fit        kernel + initramfs + dtbs into migos.itb (mkimage, sha256 hashes)
    bootpart   the Raspberry Pi boot partition tree: firmware, config.txt, boot.scr, U-Boot
    dist       tarball, migos.pyz, manifest.json, SHA256SUMS, published atomically in dist/NAME

Each module owns its step's code and a ``tasks(ctx)`` generator of doit task dicts;
``dodo.py`` only strings them together. ``tools`` is the one place that runs programs.
"""

PIPELINE = ("fetch", "rootfs", "kernel", "modules", "overlay", "prune", "initramfs",
            "uboot", "fit", "bootpart", "dist")
