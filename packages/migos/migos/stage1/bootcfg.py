"""The Raspberry Pi firmware's config.txt: effective settings for a board, and the old
OS's kernel entry (what boot.scr falls back to, written as ``migos/fallback.env``)."""

import os

# conditional filter name -> board keys (boards.py) it selects
FILTERS = {
    "pi1": {"rpi-b", "rpi-b-plus", "rpi-a", "rpi-a-plus", "rpi-cm1"},
    "pi2": {"rpi-2-b"},
    "pi3": {"rpi-3-b", "rpi-3-b-plus", "rpi-3-a-plus", "rpi-cm3"},
    "pi3+": {"rpi-3-b-plus", "rpi-3-a-plus"},
    "pi0": {"rpi-zero", "rpi-zero-w", "rpi-zero-2-w"},
    "pi0w": {"rpi-zero-w"},
    "pi02": {"rpi-zero-2-w"},
    "cm3": {"rpi-cm3"},
    "pi4": {"rpi-4-b", "rpi-400", "rpi-cm4"},
    "pi400": {"rpi-400"},
    "cm4": {"rpi-cm4"},
    "pi5": {"rpi-5-b"},
}


def effective(text, board_key=None):
    """{setting: value} the firmware applies on ``board_key`` (last one wins).

    ``initramfs`` and ``dtoverlay`` lines are kept as lists under those keys.
    Filters we cannot evaluate here (EDID, gpio, serial numbers, HDMI...) count as not
    matching.
    """
    settings = {"dtoverlay": [], "initramfs": []}
    active = True
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip().lower()
            if name == "all":
                active = True
            elif name == "none":
                active = False
            else:
                active = board_key is not None and board_key in FILTERS.get(name, ())
            continue
        if not active:
            continue
        if line.startswith("initramfs ") or line.startswith("initramfs\t"):
            settings["initramfs"].append(line.split()[1:])
            continue
        if "=" not in line:
            continue
        k, _, v = line.partition("=")
        k, v = k.strip(), v.strip()
        if k == "dtoverlay":
            settings["dtoverlay"].append(v)
        else:
            settings[k] = v
    return settings


def _kernel_arch(path):
    """'arm64' for an arm64 Image, 'arm' for a zImage, None if unknown/missing."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if len(head) >= 60 and head[56:60] == b"ARM\x64":
        return "arm64"
    if len(head) >= 40 and head[36:40] == b"\x18\x28\x6f\x01":
        return "arm"
    return None


def fallback_entry(boot_dir, board):
    """The old OS's kernel entry as {fallback_kernel, _initrd, _cmdline, _dtb, _arch}.

    Paths are relative to the boot partition. Raises ValueError if the kernel is missing.
    """
    with open(os.path.join(boot_dir, "config.txt"), encoding="utf-8", errors="replace") as f:
        cfg = effective(f.read(), board.key if board else None)
    prefix = cfg.get("os_prefix", "")
    arm64 = cfg.get("arm_64bit", "0") not in ("0", "") or (board is not None and board.key == "rpi-5-b")
    kernel = cfg.get("kernel")
    if not kernel:
        fam = set()
        if board is not None:
            fam = {f for f, keys in FILTERS.items() if board.key in keys}
        if arm64:
            kernel = "kernel_2712.img" if "pi5" in fam and os.path.exists(
                os.path.join(boot_dir, prefix + "kernel_2712.img")) else "kernel8.img"
        elif "pi4" in fam:
            kernel = "kernel7l.img"
        elif fam & {"pi2", "pi3", "pi02", "cm3"}:
            kernel = "kernel7.img"
        else:
            kernel = "kernel.img"
    kpath = os.path.join(boot_dir, prefix + kernel)
    if not os.path.isfile(kpath):
        raise ValueError("the old OS's kernel %s is not on the boot partition" % (prefix + kernel))
    arch = _kernel_arch(kpath) or ("arm64" if arm64 else "arm")
    initrd = ""
    if cfg["initramfs"]:
        initrd = cfg["initramfs"][-1][0] if cfg["initramfs"][-1] else ""
    elif cfg.get("auto_initramfs", "0") == "1":
        cand = kernel.replace("kernel", "initramfs", 1).rsplit(".img", 1)[0]
        if os.path.isfile(os.path.join(boot_dir, prefix + cand)):
            initrd = cand
    if initrd:
        initrd = prefix + initrd
    cmdline_file = cfg.get("cmdline", "cmdline.txt")
    try:
        with open(os.path.join(boot_dir, prefix + cmdline_file), encoding="utf-8",
                  errors="replace") as f:
            cmdline = " ".join(f.read().split())
    except OSError:
        raise ValueError("the old OS's %s is missing" % (prefix + cmdline_file))
    dtb = cfg.get("device_tree") or (board.firmware_dtb if board else "")
    if dtb:
        dtb = prefix + dtb
    return {"fallback_kernel": prefix + kernel, "fallback_initrd": initrd,
            "fallback_cmdline": cmdline, "fallback_dtb": dtb, "fallback_arch": arch}


def fallback_env_text(entry):
    """``env import -t`` text: one name=value per line, in a fixed order."""
    lines = []
    for key in ("fallback_kernel", "fallback_initrd", "fallback_cmdline", "fallback_dtb",
                "fallback_arch"):
        value = entry.get(key, "")
        if "\n" in value or "\r" in value or "\x00" in value:
            raise ValueError("%s contains a line break" % key)
        lines.append("%s=%s" % (key, value))
    return "\n".join(lines) + "\n"
