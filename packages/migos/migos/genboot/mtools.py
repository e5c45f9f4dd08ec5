"""FAT access through mtools (works on block devices and image files, no mount, no vfat)."""

import hashlib
import os
import re
import subprocess
import tempfile

STAGING = ".migos-staging"


class MtoolsError(Exception):
    pass


class Fat:
    def __init__(self, path, offset):
        self.path, self.offset = path, offset
        self.image = "%s@@%d" % (path, offset)
        self.env = dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_NO_VFAT="0")

    def _run(self, *argv, check=True, data=False):
        proc = subprocess.run(list(argv), env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        if check and proc.returncode != 0:
            raise MtoolsError("%s failed: %s" % (argv[0], proc.stderr.decode(errors="replace").strip()))
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
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise MtoolsError("mkfs.fat failed: %s" % proc.stderr.decode(errors="replace").strip())


def partition(path, start_sector, sectors):
    """One MBR partition, type 0x0c (FAT32 LBA), bootable."""
    script = "label: dos\nstart=%d, size=%d, type=c, bootable\n" % (start_sector, sectors)
    proc = subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--wipe", "always",
                           path], input=script.encode(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise MtoolsError("sfdisk failed: %s" % proc.stderr.decode(errors="replace").strip())
