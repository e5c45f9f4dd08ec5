"""The one place the build runs external programs (through ``sh``).

Every call is logged to the build log; a failure raises :class:`BuildError` with
one line naming the program, its exit code and its last line of error output. A
missing program names the Debian package that provides it.
"""

import logging
import os
import shutil

import sh

log = logging.getLogger("migos.build")

# program -> Debian package that ships it (README's install command installs them all)
HOST_TOOLS = {
    "apt-get": "apt", "dpkg-deb": "dpkg", "dpkg-source": "dpkg-dev", "tar": "tar",
    "proot": "proot", "qemu-aarch64-static": "qemu-user-static",
    "qemu-arm-static": "qemu-user-static", "mkimage": "u-boot-tools",
    "depmod": "kmod", "zstd": "zstd", "make": "make", "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf", "bison": "bison", "flex": "flex",
    "bc": "bc", "gpgv": "gpgv", "dtc": "device-tree-compiler",
}


# Programs in sbin (depmod, mkfs.vfat, sfdisk) are found even when PATH lacks it.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def which(program):
    return shutil.which(program, path=SEARCH_PATH)


class BuildError(Exception):
    """A build step failed; ``str()`` is one line for the user; ``output`` the program's full output."""

    def __init__(self, message, output=""):
        super().__init__(message)
        self.output = output


def require(*programs):
    missing = [p for p in programs if which(p) is None]
    if missing:
        pkgs = sorted({HOST_TOOLS.get(p, p) for p in missing})
        raise BuildError("missing host tool%s %s; install with: apt-get install %s" % (
            "s" if len(missing) > 1 else "", ", ".join(missing), " ".join(pkgs)))


# statx(2) numbers and seccomp audit arches of the hosts the build runs on
_STATX = {"x86_64": (0xC000003E, 332), "aarch64": (0xC00000B7, 291)}


def without_statx():
    """Make statx(2) fail with ENOSYS in this process and its children (seccomp filter).

    For ``proot -q qemu-arm-static``: 32-bit glibc (2.34+) stats files with statx, qemu passes
    it on as the host's statx, and proot 5.1 does not translate statx paths, so every stat
    inside the root misses ("No such file or directory"). With statx refused, glibc (and qemu)
    fall back to fstatat64 / newfstatat, which proot translates. Used as a preexec function.
    """
    import ctypes
    import platform
    import struct
    arch, nr = _STATX[platform.machine()]
    ld, jeq, ret = 0x20, 0x15, 0x06
    prog = [(ld, 0, 0, 4), (jeq, 0, 3, arch), (ld, 0, 0, 0), (jeq, 0, 1, nr),
            (ret, 0, 0, 0x00050000 | 38),            # SECCOMP_RET_ERRNO | ENOSYS
            (ret, 0, 0, 0x7FFF0000)]                  # SECCOMP_RET_ALLOW
    raw = b"".join(struct.pack("HBBI", *i) for i in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HxxxxxxP", len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter for statx refused")


def run(program, *args, env=None, cwd=None, input=None, quiet=False, log_file=None, preexec=None):
    """Run ``program args…``; return its stdout as text. Raise BuildError on failure."""
    require(program)
    argv = [str(a) for a in args]
    log.info("run: %s %s", program, " ".join(argv))
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    kwargs = dict(_env=full_env, _cwd=cwd, _err_to_out=False, _tty_out=False)
    if input is not None:
        kwargs["_in"] = input
    if preexec is not None:
        kwargs["_preexec_fn"] = preexec
    try:
        out = sh.Command(which(program))(*argv, **kwargs)
    except sh.ErrorReturnCode as e:
        err = (e.stderr or e.stdout or b"").decode(errors="replace").strip().splitlines()
        if log_file:
            with open(log_file, "ab") as f:
                f.write(e.stdout or b"")
                f.write(e.stderr or b"")
        tail = err[-1] if err else "no output"
        full = b"\n".join(x for x in (e.stdout, e.stderr) if x).decode(errors="replace")
        raise BuildError("%s failed (exit %d): %s" % (program, e.exit_code, tail), output=full) from None
    text = str(out)
    if log_file:
        with open(log_file, "a") as f:
            f.write(text)
    if not quiet:
        log.debug(text)
    return text


def pipe_to_tar(deb, dest):
    """Unpack a .deb's data into ``dest``, keeping merged-/usr directory symlinks."""
    require("dpkg-deb", "tar")
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".tar") as tmp:
        try:
            sh.Command(which("dpkg-deb"))("--fsys-tarfile", str(deb), _out=tmp.name)
            sh.Command(which("tar"))("-x", "--keep-directory-symlink", "-f", tmp.name, "-C", str(dest))
        except sh.ErrorReturnCode as e:
            err = (e.stderr or b"").decode(errors="replace").strip().splitlines()
            raise BuildError("unpacking %s failed: %s" % (os.path.basename(str(deb)),
                                                          err[-1] if err else "no output")) from None
