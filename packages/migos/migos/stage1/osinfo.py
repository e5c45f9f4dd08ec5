"""What the old OS is: distribution and release, board, architecture, RAM, hostname.

Everything is read below ``root`` so a fixture tree works like the live system
(``root/proc/device-tree/model``, ``root/proc/meminfo`` ...).
"""

import os
import platform
import re

from .. import boards

# (os-release ID, VERSION_ID) -> human name. The one list of supported old OSes.
SUPPORTED_OS = {
    ("raspbian", "10"): "Raspbian 10 (buster)",
    ("raspbian", "11"): "Raspberry Pi OS 11 (bullseye, 32-bit)",
    ("raspbian", "12"): "Raspberry Pi OS 12 (bookworm, 32-bit)",
    ("debian", "10"): "Debian 10 (buster)",
    ("debian", "11"): "Debian 11 (bullseye)",
    ("debian", "12"): "Debian 12 (bookworm)",
    ("debian", "13"): "Debian 13 (trixie)",
}


def _read(root, rel, binary=False):
    path = os.path.join(root, rel.lstrip("/"))
    try:
        with open(path, "rb" if binary else "r") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def parse_os_release(text):
    data = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, _, v = line.partition("=")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = re.sub(r'\\(["\\$`])', r"\1", v[1:-1])
        data[k.strip()] = v
    return data


def os_release(root):
    for rel in ("etc/os-release", "usr/lib/os-release"):
        text = _read(root, rel)
        if text is not None:
            return parse_os_release(text)
    return {}


def is_raspberry_pi_os(root, rel):
    """Raspberry Pi OS 64-bit says ID=debian; its archive list gives it away."""
    if rel.get("ID") == "raspbian":
        return True
    for f in ("etc/apt/sources.list.d/raspi.list", "etc/apt/sources.list.d/raspi.sources"):
        if os.path.exists(os.path.join(root, f)):
            return True
    return False


def describe_os(root):
    rel = os_release(root)
    key = (rel.get("ID", ""), rel.get("VERSION_ID", ""))
    name = SUPPORTED_OS.get(key)
    if name and key[0] == "debian" and is_raspberry_pi_os(root, rel):
        name = "Raspberry Pi OS %s (%s, 64-bit)" % (key[1], rel.get("VERSION_CODENAME", "?"))
    return {"id": key[0], "version_id": key[1], "pretty_name": rel.get("PRETTY_NAME"),
            "codename": rel.get("VERSION_CODENAME"), "supported": name is not None,
            "name": name or rel.get("PRETTY_NAME") or "unknown"}


def dt_model(root):
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        data = _read(root, rel, binary=True)
        if data is not None:
            return boards.normalise_model(data)
    return None


def architecture(root):
    """armv6 (Raspbian armhf), armhf, arm64, or whatever the tree says (amd64 ...)."""
    rel = os_release(root)
    lib = os.path.join(root, "usr/lib")
    arch = None
    for d, a in (("aarch64-linux-gnu", "arm64"), ("arm-linux-gnueabihf", "armhf"),
                 ("x86_64-linux-gnu", "amd64"), ("arm-linux-gnueabi", "armel")):
        if os.path.isdir(os.path.join(lib, d)):
            arch = a
            break
    if arch is None and root in ("", "/"):
        arch = {"aarch64": "arm64", "armv7l": "armhf", "armv6l": "armhf",
                "x86_64": "amd64"}.get(platform.machine(), platform.machine())
    if arch == "armhf" and rel.get("ID") == "raspbian":
        return "armv6"
    return arch


def mem_total_kib(root):
    text = _read(root, "proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(m.group(1)) if m else None


def hostname(root):
    text = _read(root, "etc/hostname")
    if text:
        name = text.strip().splitlines()[0].strip() if text.strip() else ""
        if name:
            return name
    return None


def valid_hostname(name):
    return bool(name) and len(name) <= 63 and re.match(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$",
                                                       name) is not None
