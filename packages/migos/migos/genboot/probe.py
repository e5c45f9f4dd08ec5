"""Facts about a gen_migos-boot TARGET, read from sysfs and /proc (no writes)."""

import os
import stat

SYSTEM_MOUNTS = ("/", "/boot", "/boot/firmware", "/usr", "/var", "/home")


def _read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _mounts():
    """[(major:minor, mount point, source)] from /proc/self/mountinfo."""
    out = []
    for line in _read("/proc/self/mountinfo").splitlines():
        f = line.split()
        if len(f) < 10:
            continue
        sep = f.index("-")
        out.append((f[2], f[4].replace("\\040", " "), f[sep + 2]))
    return out


def _disk_of(devno):
    """The whole-disk sysfs name holding block device MAJ:MIN, or None."""
    link = "/sys/dev/block/" + devno
    if not os.path.exists(link):
        return None
    real = os.path.realpath(link)
    if os.path.exists(os.path.join(real, "partition")):
        real = os.path.dirname(real)
    return os.path.basename(real)


def _loop_backing():
    """{loop name: backing file} for attached loop devices."""
    out = {}
    for name in os.listdir("/sys/block") if os.path.isdir("/sys/block") else []:
        if name.startswith("loop"):
            b = _read("/sys/block/%s/loop/backing_file" % name)
            if b:
                out[name] = b
    return out


def facts(path):
    """Everything plan.check_disk needs about ``path``."""
    out = {"path": path, "kind": "other", "size": 0}
    try:
        st = os.stat(path)
    except OSError as e:
        out["error"] = e.strerror
        return out
    mounts = _mounts()
    by_disk = {}
    for devno, point, _src in mounts:
        d = _disk_of(devno)
        if d:
            by_disk.setdefault(d, []).append(point)
    backing = _loop_backing()
    if stat.S_ISREG(st.st_mode):
        out.update(kind="image", size=st.st_size)
        real = os.path.realpath(path)
        for loop, b in backing.items():
            if os.path.realpath(b) == real and by_disk.get(loop):
                out["mounted"] = "through /dev/%s on %s" % (loop, by_disk[loop][0])
        for devno, point, src in mounts:
            if point in SYSTEM_MOUNTS and os.path.realpath(src) == real:
                out["system"] = "mounted on %s" % point
        return out
    if not stat.S_ISBLK(st.st_mode):
        return out
    devno = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    real = os.path.realpath("/sys/dev/block/" + devno)
    name = os.path.basename(real)
    out["kind"] = "block"
    out["is_partition"] = os.path.exists(os.path.join(real, "partition"))
    out["size"] = int(_read(os.path.join(real, "size"), "0")) * 512
    out["removable"] = _read(os.path.join(real, "removable")) == "1"
    out["read_only"] = _read(os.path.join(real, "ro")) == "1"
    system = sorted({p for d, pts in by_disk.items() if d == name for p in pts
                     if p in SYSTEM_MOUNTS})
    if system:
        out["system"] = "mounted on " + ", ".join(system)
    if by_disk.get(name):
        out["mounted"] = "on " + ", ".join(sorted(by_disk[name])[:3])
    return out
