"""FAT access through mtools (works on block devices and image files, no mount, no vfat)."""

import hashlib
import re
import tempfile

from .. import run as runmod

STAGING = ".migos-staging"


class MtoolsError(Exception):
    pass


class Fat:
    def __init__(self, path, offset):
        self.path, self.offset = path, offset
        self.image = "%s@@%d" % (path, offset)
        self.env = {"MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}

    def _run(self, *argv, check=True, data=False):
        proc = _run(argv, env=self.env)
        if check and proc.returncode != 0:
            raise MtoolsError("%s failed: %s" % (argv[0], " ".join(runmod.error_lines(proc))))
        return proc if data else proc.stdout.decode(errors="replace")

    def free_bytes(self):
        out = self._run("mdir", "-i", self.image, "-a", "::/")
        m = re.search(r"([\d ]+) bytes free", out)
        return int(m.group(1).replace(" ", "")) if m else 0

    def exists(self, path):
        return self._run("mdir", "-i", self.image, "-b", "::/" + path, check=False,
                         data=True).returncode == 0

    def mkdir(self, path):
        if not self.exists(path):
            self._run("mmd", "-i", self.image, "::/" + path)

    def deltree(self, path):
        if self.exists(path):
            self._run("mdeltree", "-i", self.image, "::/" + path)

    def put(self, path, data):
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(data)
            tmp.flush()
            self._run("mcopy", "-o", "-i", self.image, tmp.name, "::/" + path)

    def get(self, path):
        return self._run("mtype", "-i", self.image, "::/" + path, data=True).stdout

    def sha256(self, path):
        return hashlib.sha256(self.get(path)).hexdigest()

    def move(self, src, dest):
        self._run("mmove", "-D", "o", "-i", self.image, "::/" + src, "::/" + dest)


def mkfs(path, start_sector, sectors, bits, label="MIGOS-BOOT"):
    """A FAT file system inside the partition at ``start_sector`` (mkfs.fat --offset)."""
    argv = ["mkfs.fat", "-F", str(bits), "-n", label, "--offset", str(start_sector), path,
            str(sectors // 2)]
    proc = _run(argv)
    if proc.returncode != 0:
        raise MtoolsError("mkfs.fat failed: %s" % " ".join(runmod.error_lines(proc)))


def partition(path, start_sector, sectors):
    """One MBR partition, type 0x0c (FAT32 LBA), bootable."""
    script = "label: dos\nstart=%d, size=%d, type=c, bootable\n" % (start_sector, sectors)
    proc = _run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--wipe", "always", path],
                input=script.encode())
    if proc.returncode != 0:
        raise MtoolsError("sfdisk failed: %s" % " ".join(runmod.error_lines(proc)))


def _run(argv, env=None, input=None):
    """A tool's run (bytes in and out); a missing tool is an MtoolsError like a failing one."""
    try:
        return runmod.run(argv, check=False, env=env, input=input, binary=True)
    except runmod.CommandFailed as e:
        raise MtoolsError(str(e))
