"""Installing MIGOS onto the old OS's boot partition (``init``) and undoing it (``restore-boot``).

Power-cut safety (DESIGN.md 3, last bullet)
-------------------------------------------
Every new file is written under a temporary name, fsynced, renamed to its own name and
read back before anything refers to it. Files whose names collide with the old OS's
(an old ``boot.scr``...) are first copied to ``migos/backup/`` with a checksummed manifest.

``config.txt`` is changed in two steps, neither of which rewrites a byte the old OS's
settings live in:

1. *append (inert)*: the MIGOS settings are appended after the old settings, behind the
   firmware's ``[none]`` filter, which applies the settings that follow it to no board.
   The first ``len(old)`` bytes are untouched, so whether the append reached the card or
   not, the firmware boots the old OS.
2. *the switch*: the six bytes ``[none]`` are overwritten in place, without truncating,
   by ``[all]\\n``. They are placed so they never straddle a 512-byte sector, and the file
   size does not change, so no FAT, directory size or cluster chain is touched: the
   switch is one sector write. Before it lands the old OS boots; after it, the MIGOS
   settings (the last ones in the file, after an ``[all]`` that ends any filter of the
   old OS) win, and the firmware loads ``migos/u-boot.bin`` (``kernel=u-boot.bin``,
   64-bit builds) or, in 32-bit builds that set no ``kernel=``, the board's own default
   file under migos/ (kernel.img, kernel7.img, kernel7l.img: one U-Boot each). An old
   ``kernel=`` line would outlive the block, so init refuses a 32-bit MIGOS then.

``restore-boot`` runs the same in reverse: ``[all]\\n`` back to ``[none]`` (one sector;
the old OS boots from then on), truncate to the old length (the old bytes were never
touched; the result is checked against the manifest's sha256), put back the files MIGOS
replaced, and only then remove MIGOS's files.
"""

import datetime
import hashlib
import json
import os
import shutil

from .. import __version__, log
from ..errors import MigosError, UsageError
from .tarball import config_kernel, sha256_file

MIGOS_DIR = "migos"
BACKUP_DIR = "migos/backup"
MANIFEST = "migos/backup/manifest.json"
MARK_OFF = b"[none]"
MARK_ON = b"[all]\n"
SECTOR = 512
BLOCK_BEGIN = b"# >>> MIGOS: installed by 'migos init'; undo with 'migos restore-boot' >>>\n"
BLOCK_END = b"# <<< MIGOS <<<\n"
TMP_SUFFIX = ".migos-tmp"


class BootStateError(MigosError):
    exit_code = 2


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _drop_cache(fd):
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def read_back(path):
    """Read a file after asking the kernel to drop its cached pages."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _drop_cache(fd)
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_new(boot, rel, data, mode=None):
    """Write ``data`` to ``boot/rel`` via a temporary name, fsync, rename, verify."""
    path = os.path.join(boot, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + TMP_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode if mode is not None else 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if mode is not None:
        try:
            os.chmod(path, mode)
        except OSError:
            pass        # FAT keeps no modes (vfat may refuse); balenaOS sets 0600 when copying
    _fsync_dir(os.path.dirname(path))
    if _sha(read_back(path)) != _sha(data):
        raise MigosError("%s reads back different from what was written" % rel,
                         "the card may be failing; run migos restore-boot and replace it")
    return path


def _names_ci(directory):
    try:
        return {n.lower(): n for n in os.listdir(directory)}
    except OSError:
        return {}


def existing_name(boot, rel):
    """The name under which ``rel`` exists on the (case-insensitive) FAT, or None."""
    parts = rel.split("/")
    cur = boot
    found = []
    for p in parts:
        names = _names_ci(cur)
        real = names.get(p.lower())
        if real is None:
            return None
        found.append(real)
        cur = os.path.join(cur, real)
    return "/".join(found)


def inert_block(old, migos_config):
    """Bytes to append to the old config.txt and the offset of the ``[none]`` marker."""
    lines = [ln.strip() for ln in migos_config.splitlines()]
    settings = [ln for ln in lines if ln and not ln.startswith("#")]
    if not settings:
        raise UsageError("the MIGOS tarball's config.txt holds no settings", "use a MIGOS build")
    head = b"" if not old or old.endswith(b"\n") else b"\n"
    head += b"\n" + BLOCK_BEGIN
    marker_at = len(old) + len(head)
    if marker_at // SECTOR != (marker_at + len(MARK_OFF) - 1) // SECTOR:
        pad = SECTOR - marker_at % SECTOR
        head += b"\n" * pad
        marker_at += pad
    body = MARK_OFF + b"\n" + "\n".join(settings).encode("utf-8") + b"\n" + BLOCK_END
    return head + body, marker_at


def flip(path, offset, expect, new):
    """Overwrite ``expect`` at ``offset`` with ``new`` (same length) in place; fsync.

    The file is opened write-only without O_TRUNC (some FAT drivers refuse O_RDWR)."""
    assert len(expect) == len(new)
    with open(path, "rb") as f:
        f.seek(offset)
        cur = f.read(len(expect))
    if cur == new:
        return False
    if cur != expect:
        raise BootStateError("config.txt holds %r at byte %d where MIGOS expects %r"
                             % (cur, offset, expect),
                             "config.txt was edited after migos init; restore it by hand "
                             "from migos/backup/config.txt")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, new, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def state(boot):
    """'clean', 'installed' (switched off: old OS boots) or 'active' (MIGOS boots)."""
    man = os.path.join(boot, MANIFEST)
    cfg = os.path.join(boot, "config.txt")
    if not os.path.exists(man):
        if os.path.isdir(os.path.join(boot, MIGOS_DIR)):
            return "partial"
        return "clean"
    with open(man) as f:
        m = json.load(f)
    c = m.get("config_txt", {})
    try:
        with open(cfg, "rb") as f:
            f.seek(c.get("marker_offset", 0))
            at = f.read(len(MARK_ON))
    except OSError:
        return "installed"
    return "active" if at == MARK_ON else "installed"


def _stage2_started(disk):
    """A stage-2 journal record on the disk: the point of no return is behind it."""
    from ..stage2 import journal
    try:
        return journal.present(disk)
    except (OSError, ValueError, MigosError):
        return False             # the disk cannot be read: nothing says stage 2 started


def plan_init(boot, tar, extra_files):
    """Everything init will do, as a list of (action, path, detail) — nothing written."""
    actions = []
    if existing_name(boot, MIGOS_DIR):
        raise BootStateError("the boot partition already holds migos/ (an earlier migos init)",
                             "run 'migos restore-boot' first")
    with open(os.path.join(boot, "config.txt"), "rb") as f:
        old_cfg = f.read()
    if BLOCK_BEGIN in old_cfg:
        raise BootStateError("config.txt already holds a MIGOS block",
                             "run 'migos restore-boot' first")
    if config_kernel(tar.migos_config) is None:
        from .checks import kernel_lines
        old_kernel = kernel_lines(old_cfg.decode("utf-8", "replace"))
        if old_kernel:
            # MIGOS's block cannot unset it: the firmware would look for migos/<that name>
            raise BootStateError("config.txt line %d sets kernel=%s, which would stop the firmware "
                                 "from picking this 32-bit MIGOS's migos/kernel*.img"
                                 % old_kernel[0], "comment that line out, then run migos init again")
    files = dict(tar.install_files())
    files.update(extra_files)
    for rel in sorted(files):
        prior = existing_name(boot, rel)
        if prior:
            actions.append(("backup", prior, "%s/%s" % (BACKUP_DIR, prior)))
            actions.append(("replace", rel, "%d bytes" % len(files[rel])))
        else:
            actions.append(("write", rel, "%d bytes" % len(files[rel])))
    block, marker = inert_block(old_cfg, tar.migos_config)
    actions.append(("backup", "config.txt", "%s/config.txt" % BACKUP_DIR))
    actions.append(("append", "config.txt", "%d bytes of MIGOS settings behind [none]" % len(block)))
    actions.append(("switch", "config.txt", "[none] -> [all] at byte %d" % marker))
    return actions, files, old_cfg, block, marker


def install(boot, tar, extra_files, pretend=False, disk_path=None):
    """Install MIGOS on the boot partition at ``boot``. Returns the list of actions."""
    actions, files, old_cfg, block, marker = plan_init(boot, tar, extra_files)
    for a in actions:
        log.info("init%s: %s %s (%s)" % (" (pretend)" if pretend else "", a[0], a[1], a[2]))
    if pretend:
        return actions
    created_dirs = sorted({os.path.dirname(p) for p in files if "/" in p} | {MIGOS_DIR, BACKUP_DIR})
    created_dirs = [d for d in created_dirs if not existing_name(boot, d)]
    # 1. backups + manifest, before anything is changed
    replaced = {}
    manifest = {
        "format": 1, "migos_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tarball": tar.name, "replaced": replaced, "installed": {},
        "created_dirs": created_dirs,
        "disk": disk_path,
        "config_txt": {"size": len(old_cfg), "sha256": _sha(old_cfg), "marker_offset": marker,
                       "block_sha256": _sha(block), "final_size": len(old_cfg) + len(block),
                       "backup": BACKUP_DIR + "/config.txt"},
    }
    write_new(boot, BACKUP_DIR + "/config.txt", old_cfg)
    replaced["config.txt"] = {"sha256": _sha(old_cfg), "size": len(old_cfg),
                              "backup": BACKUP_DIR + "/config.txt"}
    for rel in sorted(files):
        prior = existing_name(boot, rel)
        if prior:
            data = read_back(os.path.join(boot, prior))
            write_new(boot, "%s/%s" % (BACKUP_DIR, prior), data)
            replaced[prior] = {"sha256": _sha(data), "size": len(data),
                               "backup": "%s/%s" % (BACKUP_DIR, prior)}
    for rel in sorted(files):
        manifest["installed"][rel] = _sha(files[rel])
    write_new(boot, MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    # 2. MIGOS's files, each under its own name
    for rel in sorted(files):
        mode = 0o600 if rel.startswith((MIGOS_DIR + "/system-connections/",
                                         MIGOS_DIR + "/agent/")) else None
        write_new(boot, existing_name(boot, rel) or rel, files[rel], mode=mode)
    # 3. the inert append
    cfg_path = os.path.join(boot, "config.txt")
    if read_back(cfg_path) != old_cfg:
        raise BootStateError("config.txt changed while migos init ran", "run migos init again")
    fd = os.open(cfg_path, os.O_WRONLY)
    try:
        os.pwrite(fd, block, len(old_cfg))
        os.fsync(fd)
    finally:
        os.close(fd)
    if read_back(cfg_path) != old_cfg + block:
        raise MigosError("config.txt reads back different after the append",
                         "run 'migos restore-boot'")
    # 4. the switch
    flip(cfg_path, marker, MARK_OFF, MARK_ON)
    got = read_back(cfg_path)
    if got[marker:marker + len(MARK_ON)] != MARK_ON or len(got) != len(old_cfg) + len(block):
        raise MigosError("config.txt reads back wrong after the switch", "run 'migos restore-boot'")
    log.event("SUCCESS", "MIGOS installed on the boot partition; it boots next", files=len(files))
    return actions


def restore(boot, pretend=False, disk_path=None):
    """Give the old OS its boot partition back exactly. Returns the list of actions.

    Refused once stage 2 has written its journal (the point of no return)."""
    st = state(boot)
    actions = []
    if st == "clean":
        raise BootStateError("there is no MIGOS installation on %s to undo" % boot,
                             "nothing to restore")
    if st == "partial":
        # init was cut before its manifest: only new files under migos/ exist, config.txt
        # was not touched yet (the manifest is written before anything is changed).
        actions.append(("remove", MIGOS_DIR + "/", "unfinished init"))
        if not pretend:
            _erase_secrets(boot)
            shutil.rmtree(os.path.join(boot, existing_name(boot, MIGOS_DIR)))
            _fsync_dir(boot)
        return actions
    with open(os.path.join(boot, MANIFEST)) as f:
        m = json.load(f)
    disk = disk_path or m.get("disk")
    if disk and _stage2_started(disk):
        raise BootStateError("MIGOS has already started writing the disk (its journal is "
                                 "there): the old OS cannot be given back",
                                 "let MIGOS finish the migration")
    c = m["config_txt"]
    cfg_path = os.path.join(boot, "config.txt")
    actions.append(("switch", "config.txt", "[all] -> [none] at byte %d" % c["marker_offset"]))
    actions.append(("truncate", "config.txt", "to %d bytes" % c["size"]))
    for rel in sorted(m["replaced"]):
        if rel != "config.txt":
            actions.append(("restore", rel, m["replaced"][rel]["backup"]))
    for rel in sorted(m["installed"]):
        if rel not in m["replaced"]:
            actions.append(("remove", rel, "installed by MIGOS"))
    from .agentcarry import SECRETS
    for rel in SECRETS:
        if existing_name(boot, rel):
            actions.append(("erase", rel, "overwritten with zeros, then deleted"))
    actions.append(("remove", MIGOS_DIR + "/", "with the backup"))
    for a in actions:
        log.info("restore-boot%s: %s %s (%s)" % (" (pretend)" if pretend else "", a[0], a[1], a[2]))
    if pretend:
        return actions
    # 1. switch back: one in-place write; from here on the old OS boots
    with open(cfg_path, "rb") as f:
        cur = f.read()
    if len(cur) > c["marker_offset"]:
        flip(cfg_path, c["marker_offset"], MARK_ON, MARK_OFF)
    # 2. drop the inert block; the old bytes were never rewritten
    if len(cur) != c["size"]:
        fd = os.open(cfg_path, os.O_WRONLY)
        try:
            os.ftruncate(fd, c["size"])
            os.fsync(fd)
        finally:
            os.close(fd)
    if _sha(read_back(cfg_path)) != c["sha256"]:
        backup = read_back(os.path.join(boot, c["backup"]))
        if _sha(backup) != c["sha256"]:
            raise BootStateError("config.txt and its backup both differ from the manifest",
                                 "restore config.txt by hand")
        write_new(boot, "config.txt", backup)
    # 3. the other files MIGOS replaced
    for rel, info in sorted(m["replaced"].items()):
        if rel == "config.txt":
            continue
        data = read_back(os.path.join(boot, info["backup"]))
        if _sha(data) != info["sha256"]:
            raise BootStateError("the backup of %s is damaged" % rel, "restore it by hand")
        write_new(boot, rel, data)
    # 4. only now remove what MIGOS added
    for rel in sorted(m["installed"], reverse=True):
        if rel in m["replaced"] or rel.split("/")[0] == MIGOS_DIR:
            continue
        name = existing_name(boot, rel)
        if name:
            os.unlink(os.path.join(boot, name))
    for d in sorted(m["created_dirs"], key=lambda s: -s.count("/")):
        if d.split("/")[0] == MIGOS_DIR:
            continue
        name = existing_name(boot, d)
        if name:
            try:
                os.rmdir(os.path.join(boot, name))
            except OSError:
                pass
    for leftover in os.listdir(boot):
        if leftover.endswith(TMP_SUFFIX):
            os.unlink(os.path.join(boot, leftover))
    _erase_secrets(boot)
    shutil.rmtree(os.path.join(boot, existing_name(boot, MIGOS_DIR)))
    _fsync_dir(boot)
    log.event("SUCCESS", "the old OS's boot partition is restored")
    return actions


def _erase_secrets(boot):
    """The fleet agent's key and password carried for MIGOS: zeroed in place, then deleted."""
    from . import agentcarry
    for rel in agentcarry.erase_mounted(boot, existing_name):
        log.event("OK", "erased %s (overwritten with zeros, then deleted)" % rel)


def file_tree(boot):
    """{relative path: sha256} of every file under ``boot`` (tests, reports)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(boot):
        for n in filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, boot)] = sha256_file(p)
    return out
