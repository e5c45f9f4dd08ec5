"""The one table of Raspberry Pi boards MIGOS knows (stage 1 and the build share it).

Each :class:`Board` row says how to recognise the board (prefixes of the device-tree
``model`` string, as in ``/proc/device-tree/model``), which balenaOS device types run on
it (one for a 32-bit and one for a 64-bit balenaOS, ``None`` where balena publishes none),
which device tree the Raspberry Pi firmware loads by default, which upstream Linux
device tree Debian's kernel package ships for it (``None`` where it has none), the FIT
configuration name the MIGOS build gives it, the instruction sets it can run, the
kernel file the firmware boots on it in 32-bit mode, and the names U-Boot's Raspberry Pi
board code puts in ``${fdtfile}`` for it (how boot.scr recognises the board).

Architectures: ``armv6`` (Raspbian's ARMv6 hard-float userland), ``armhf`` (Debian's
ARMv7 hard float), ``arm64``.

Pure data plus lookups; no I/O.
"""

import collections

Board = collections.namedtuple("Board", [
    "key",            # short stable id, e.g. "rpi-3-b-plus"
    "name",           # human name
    "models",         # tuple of device-tree model prefixes
    "dt32",           # balena device type slug of the 32-bit balenaOS, or None
    "dt64",           # balena device type slug of the 64-bit balenaOS, or None
    "firmware_dtb",   # the Raspberry Pi firmware's default dtb file name
    "upstream_dtb",   # Debian's upstream dtb (path under the kernel's dtb dir), or None
    "fit_config",     # FIT configuration name in migos.itb
    "arches",         # tuple of architectures the SoC can run
    "kernel32",       # the firmware's default kernel file with arm_64bit=0, or None (no 32-bit boot)
    "uboot_dtbs",     # names U-Boot 2023.01 (board/raspberrypi/rpi/rpi.c) sets as ${fdtfile},
                      # without the "broadcom/" directory its 64-bit builds add
])

# The firmware's default kernel file per SoC in 32-bit mode (arm_64bit=0): it picks it by
# itself, so with os_prefix=migos/ a MIGOS boot partition carries one U-Boot per file.
KERNEL_V6, KERNEL_V7, KERNEL_V7L = "kernel.img", "kernel7.img", "kernel7l.img"
KERNEL64 = "kernel8.img"
KERNEL_FILES = (KERNEL_V6, KERNEL_V7, KERNEL_V7L, KERNEL64)

_V6 = ("armv6",)
_V7 = ("armv6", "armhf")
_V8 = ("armv6", "armhf", "arm64")

BOARDS = (
    # --- BCM2835 (ARM1176, ARMv6 only) ---
    Board("rpi-b", "Raspberry Pi 1 Model B",
          ("Raspberry Pi Model B Rev",), "raspberry-pi", None,
          "bcm2708-rpi-b.dtb", "bcm2835-rpi-b.dtb", "rpi-b", _V6,
          KERNEL_V6, ("bcm2835-rpi-b.dtb", "bcm2835-rpi-b-rev2.dtb")),
    Board("rpi-b-plus", "Raspberry Pi 1 Model B+",
          ("Raspberry Pi Model B Plus",), "raspberry-pi", None,
          "bcm2708-rpi-b-plus.dtb", "bcm2835-rpi-b-plus.dtb", "rpi-b-plus", _V6,
          KERNEL_V6, ("bcm2835-rpi-b-plus.dtb",)),
    Board("rpi-a", "Raspberry Pi 1 Model A",
          ("Raspberry Pi Model A Rev",), "raspberry-pi", None,
          "bcm2708-rpi-b.dtb", "bcm2835-rpi-a.dtb", "rpi-a", _V6,
          KERNEL_V6, ("bcm2835-rpi-a.dtb",)),
    Board("rpi-a-plus", "Raspberry Pi 1 Model A+",
          ("Raspberry Pi Model A Plus",), "raspberry-pi", None,
          "bcm2708-rpi-b-plus.dtb", "bcm2835-rpi-a-plus.dtb", "rpi-a-plus", _V6,
          KERNEL_V6, ("bcm2835-rpi-a-plus.dtb",)),
    Board("rpi-cm1", "Raspberry Pi Compute Module 1",
          ("Raspberry Pi Compute Module Rev",), "raspberry-pi", None,
          "bcm2708-rpi-cm.dtb", "bcm2835-rpi-cm1-io1.dtb", "rpi-cm1", _V6,
          KERNEL_V6, ("bcm2835-rpi-cm.dtb",)),
    Board("rpi-zero", "Raspberry Pi Zero",
          ("Raspberry Pi Zero Rev",), "raspberry-pi", None,
          "bcm2708-rpi-zero.dtb", "bcm2835-rpi-zero.dtb", "rpi-zero", _V6,
          KERNEL_V6, ("bcm2835-rpi-zero.dtb",)),
    Board("rpi-zero-w", "Raspberry Pi Zero W",
          ("Raspberry Pi Zero W Rev", "Raspberry Pi Zero W"), "raspberry-pi", None,
          "bcm2708-rpi-zero-w.dtb", "bcm2835-rpi-zero-w.dtb", "rpi-zero-w", _V6,
          KERNEL_V6, ("bcm2835-rpi-zero-w.dtb",)),
    # --- BCM2836 (Cortex-A7) ---
    Board("rpi-2-b", "Raspberry Pi 2 Model B",
          ("Raspberry Pi 2 Model B",), "raspberry-pi2", None,
          "bcm2709-rpi-2-b.dtb", "bcm2836-rpi-2-b.dtb", "rpi-2-b", _V7,
          KERNEL_V7, ("bcm2836-rpi-2-b.dtb",)),
    # --- BCM2837 (Cortex-A53) ---
    Board("rpi-3-b", "Raspberry Pi 3 Model B",
          ("Raspberry Pi 3 Model B Rev",), "raspberrypi3", "raspberrypi3-64",
          "bcm2710-rpi-3-b.dtb", "broadcom/bcm2837-rpi-3-b.dtb", "rpi-3-b", _V8,
          KERNEL_V7, ("bcm2837-rpi-3-b.dtb",)),
    Board("rpi-3-b-plus", "Raspberry Pi 3 Model B+",
          ("Raspberry Pi 3 Model B Plus",), "raspberrypi3", "raspberrypi3-64",
          "bcm2710-rpi-3-b-plus.dtb", "broadcom/bcm2837-rpi-3-b-plus.dtb", "rpi-3-b-plus", _V8,
          KERNEL_V7, ("bcm2837-rpi-3-b-plus.dtb",)),
    Board("rpi-3-a-plus", "Raspberry Pi 3 Model A+",
          ("Raspberry Pi 3 Model A Plus",), "raspberrypi3", "raspberrypi3-64",
          "bcm2710-rpi-3-b-plus.dtb", "broadcom/bcm2837-rpi-3-a-plus.dtb", "rpi-3-a-plus", _V8,
          KERNEL_V7, ("bcm2837-rpi-3-a-plus.dtb",)),
    Board("rpi-zero-2-w", "Raspberry Pi Zero 2 W",
          ("Raspberry Pi Zero 2 W",), None, "raspberrypi0-2w-64",
          "bcm2710-rpi-zero-2-w.dtb", "broadcom/bcm2837-rpi-zero-2-w.dtb", "rpi-zero-2-w", _V8,
          KERNEL_V7, ("bcm2837-rpi-zero-2.dtb",)),
    Board("rpi-cm3", "Raspberry Pi Compute Module 3 / 3+",
          ("Raspberry Pi Compute Module 3",), "raspberrypi3", "raspberrypi3-64",
          "bcm2710-rpi-cm3.dtb", "broadcom/bcm2837-rpi-cm3-io3.dtb", "rpi-cm3", _V8,
          KERNEL_V7, ("bcm2837-rpi-cm3.dtb",)),
    # --- BCM2711 (Cortex-A72) ---
    Board("rpi-4-b", "Raspberry Pi 4 Model B",
          ("Raspberry Pi 4 Model B",), None, "raspberrypi4-64",
          "bcm2711-rpi-4-b.dtb", "broadcom/bcm2711-rpi-4-b.dtb", "rpi-4-b", _V8,
          KERNEL_V7L, ("bcm2711-rpi-4-b.dtb",)),
    Board("rpi-400", "Raspberry Pi 400",
          ("Raspberry Pi 400",), None, "raspberrypi400-64",
          "bcm2711-rpi-400.dtb", "broadcom/bcm2711-rpi-400.dtb", "rpi-400", _V8,
          KERNEL_V7L, ("bcm2711-rpi-400.dtb",)),
    Board("rpi-cm4", "Raspberry Pi Compute Module 4",
          ("Raspberry Pi Compute Module 4 Rev",), None, "raspberrypicm4-ioboard",
          "bcm2711-rpi-cm4.dtb", "broadcom/bcm2711-rpi-cm4-io.dtb", "rpi-cm4", _V8,
          KERNEL_V7L, ("bcm2711-rpi-cm4.dtb",)),
    # --- BCM2712 (Cortex-A76). Debian 12's kernel (6.1) ships no Pi 5 device tree. ---
    Board("rpi-5-b", "Raspberry Pi 5 Model B",
          ("Raspberry Pi 5 Model B",), None, "raspberrypi5",
          "bcm2712-rpi-5-b.dtb", None, "rpi-5-b", ("arm64",),
          None, ()),
)

BY_KEY = {b.key: b for b in BOARDS}


def normalise_model(model):
    """The model string as read from /proc/device-tree/model (NUL-terminated, maybe bytes)."""
    if isinstance(model, bytes):
        model = model.decode("utf-8", "replace")
    return model.replace("\x00", "").strip()


def by_model(model):
    """The board whose longest model prefix matches ``model``, or ``None``."""
    model = normalise_model(model)
    best, best_len = None, -1
    for board in BOARDS:
        for prefix in board.models:
            if model.startswith(prefix) and len(prefix) > best_len:
                best, best_len = board, len(prefix)
    return best


def by_key(key):
    return BY_KEY.get(key)


def device_types(board):
    """The balena device types that run on ``board`` (32-bit first)."""
    return tuple(dt for dt in (board.dt32, board.dt64) if dt)


def boards_for_device_type(slug):
    """Every board a balena device type ``slug`` runs on."""
    return tuple(b for b in BOARDS if slug in (b.dt32, b.dt64))


def all_device_types():
    seen = []
    for b in BOARDS:
        for dt in device_types(b):
            if dt not in seen:
                seen.append(dt)
    return tuple(seen)


def default_device_type(board, arch):
    """The device type matching an old OS of architecture ``arch`` on ``board``.

    A 64-bit OS gets the 64-bit balenaOS; a 32-bit OS the 32-bit one where balena has
    one, else the 64-bit one (Pi 4/400/CM4/Zero 2 W/5 have only 64-bit balenaOS).
    """
    if arch == "arm64":
        return board.dt64 or board.dt32
    return board.dt32 or board.dt64


def fit_configs():
    """FIT configuration name -> (board key, firmware dtb, upstream dtb), for the build."""
    return {b.fit_config: (b.key, b.firmware_dtb, b.upstream_dtb) for b in BOARDS}


def firmware_kernel(board, bits=32):
    """The kernel file the Pi firmware boots on ``board``: ``kernel8.img`` in 64-bit mode,
    else the board's 32-bit default (kernel.img, kernel7.img, kernel7l.img; None if it has none)."""
    return KERNEL64 if bits == 64 else board.kernel32


def boot_plan(board, bits=32):
    """(FIT configuration, firmware kernel file) that a MIGOS boot partition uses on ``board``.

    The build (FIT configurations, U-Boot file names) and ``migos diagnostic`` both answer
    from here, so they cannot disagree."""
    return board.fit_config, firmware_kernel(board, bits)


def group_by_kernel(keys, bits=32):
    """{firmware kernel file: [board keys in the given order]} for the boards ``keys``."""
    out = {}
    for key in keys:
        out.setdefault(firmware_kernel(BY_KEY[key], bits), []).append(key)
    return out
