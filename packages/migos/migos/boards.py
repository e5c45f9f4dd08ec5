"""TEMPORARY board table (replaced by the stage-1 table at merge)."""
import collections

Board = collections.namedtuple("Board", "key name fit_config upstream_dtb firmware_dtb")
BOARDS = [
    Board("rpi-3-b", "Raspberry Pi 3 Model B", "rpi-3-b", "bcm2837-rpi-3-b.dtb", "bcm2710-rpi-3-b.dtb"),
    Board("rpi-3-b-plus", "Raspberry Pi 3 Model B+", "rpi-3-b-plus", "bcm2837-rpi-3-b-plus.dtb", "bcm2710-rpi-3-b-plus.dtb"),
    Board("rpi-zero-2-w", "Raspberry Pi Zero 2 W", "rpi-zero-2-w", "bcm2837-rpi-zero-2-w.dtb", "bcm2710-rpi-zero-2-w.dtb"),
    Board("rpi-cm3", "Raspberry Pi Compute Module 3", "rpi-cm3", "bcm2837-rpi-cm3-io3.dtb", "bcm2710-rpi-cm3.dtb"),
    Board("rpi-4-b", "Raspberry Pi 4 Model B", "rpi-4-b", "bcm2711-rpi-4-b.dtb", "bcm2711-rpi-4-b.dtb"),
    Board("rpi-cm4", "Raspberry Pi Compute Module 4", "rpi-cm4", "bcm2711-rpi-cm4-io.dtb", "bcm2711-rpi-cm4.dtb"),
    Board("qemu-virt", "qemu virt", "qemu-virt", None, None),
]
BY_KEY = {b.key: b for b in BOARDS}
