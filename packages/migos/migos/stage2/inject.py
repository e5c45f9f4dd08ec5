"""Inject config.json and NetworkManager connection files into the new resin-boot FAT.

Writing uses GNU mtools on the device at the partition's byte offset (``mcopy -i DEV@@OFFSET``),
so no loop device or mount is needed and nothing else on the disk is touched.  File times are
fixed (``SOURCE_DATE_EPOCH``) so that a resumed migration produces the same bytes as an
uninterrupted one.  Verification reads the files back with :mod:`fatread` through O_DIRECT reads
of the device, independently of mtools.
"""

import os
import shutil
import tempfile

from .. import run as runmod
from ..errors import MigosError
from . import fatread

FIXED_EPOCH = "1577836800"  # 2020-01-01T00:00:00Z: deterministic FAT timestamps
NM_DIR = "system-connections"


class InjectError(MigosError):
    exit_code = 1


def _env():
    """mtools' environment: no config file of the host, fixed file times."""
    return {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": None,
            "SOURCE_DATE_EPOCH": os.environ.get("MIGOS_SOURCE_DATE_EPOCH", FIXED_EPOCH)}


def _mtools(argv):
    if not runmod.which(argv[0]):
        raise InjectError("%s (mtools) is not installed" % argv[0], "install mtools")
    proc = runmod.run(argv, check=False, env=_env())
    if proc.returncode != 0:
        err = runmod.error_lines(proc)
        raise InjectError("%s failed on the new resin-boot: %s" % (
            argv[0], err[-1] if err else "exit %d" % proc.returncode))


def files_to_inject(config_text, nm_files):
    """{path in the FAT: bytes}."""
    out = {"config.json": config_text.encode("utf-8")}
    for name, data in nm_files:
        out[NM_DIR + "/" + name] = data
    return out


def inject(dev_path, offset, files, fat):
    """Write ``files`` into the FAT at byte ``offset`` of ``dev_path``.  ``fat`` reads it."""
    img = "%s@@%d" % (dev_path, offset)
    tmp = tempfile.mkdtemp(prefix="migos-inject-")
    try:
        os.chmod(tmp, 0o700)
        if any(p.startswith(NM_DIR + "/") for p in files):
            existing = fat.lookup(NM_DIR)
            if existing is None:
                _mtools(["mmd", "-i", img, "::" + NM_DIR])
            elif not existing.is_dir:
                raise InjectError("the image's resin-boot has a file named %s" % NM_DIR)
        for i, (path, data) in enumerate(sorted(files.items())):
            local = os.path.join(tmp, "f%d" % i)
            with open(local, "wb") as f:
                f.write(data)
            _mtools(["mcopy", "-o", "-i", img, local, "::" + path])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify(fat, files):
    """Raise InjectError unless every file reads back byte for byte."""
    for path, data in sorted(files.items()):
        try:
            e = fat.lookup(path)
            got = fat.read_file(e) if e is not None else None
        except fatread.FatError as err:
            raise InjectError("reading %s back from the new resin-boot failed (%s)" % (path, err))
        if got != data:
            raise InjectError("%s on the new resin-boot does not read back as written" % path)
