"""Test-only signed apt archives on 127.0.0.1 (helper for the mirror and signature tests).

``Key`` is a throwaway OpenPGP key in its own GNUPGHOME (generated at test time, never
committed); ``Archive`` lays out ``pool/`` and ``dists/SUITE/`` from a list of .debs
(and optionally source packages), writes Packages/Sources/Release with apt-ftparchive
and signs InRelease with a ``Key``; ``serve`` publishes directories under URL prefixes
on 127.0.0.1 only. ``raspberrypi_standins`` builds the two stand-in packages described
in tests/system/test_raspbian_mirror.py.
"""

import glob
import http.server
import os
import shutil
import subprocess
import tempfile
import threading

from debian import debfile


class Key:
    def __init__(self, home, uid="MIGOS test archive <test@invalid>", expire="1d", faked_time=None):
        os.makedirs(home, mode=0o700, exist_ok=True)
        self.home = home
        self.faked_time = faked_time
        subprocess.run(self.gpg() + ["--quick-gen-key", uid, "ed25519", "sign", expire],
                       check=True, capture_output=True)
        out = subprocess.run(self.gpg() + ["--with-colons", "--list-keys"], check=True, capture_output=True,
                             text=True).stdout
        self.fingerprint = [l.split(":")[9] for l in out.splitlines() if l.startswith("fpr:")][0]

    def gpg(self):
        argv = ["gpg", "--homedir", self.home, "--batch", "--quiet", "--pinentry-mode", "loopback",
                "--passphrase", ""]
        if self.faked_time:
            argv += ["--faked-system-time", self.faked_time, "--ignore-time-conflict"]
        return argv

    def export(self, path):
        """The public key as a binary keyring (what apt's signed-by= takes)."""
        subprocess.run(self.gpg() + ["--export", "-o", path, self.fingerprint], check=True, capture_output=True)
        return path

    def clearsign(self, src, dest, extra=()):
        if os.path.exists(dest):
            os.unlink(dest)
        subprocess.run(self.gpg() + list(extra) + ["--local-user", self.fingerprint, "--clearsign",
                                                    "-o", dest, src], check=True, capture_output=True)


class Archive:
    """One apt archive: ``root/pool/COMPONENT/…`` and ``root/dists/SUITE/…``."""

    def __init__(self, root, suite="bookworm", arch="armhf", origin="MIGOS test"):
        self.root, self.suite, self.arch, self.origin = root, suite, arch, origin
        self.components = {}
        os.makedirs(root, exist_ok=True)

    def add(self, component, debs=(), sources=()):
        """Copy .debs (hard links when possible) and source packages (.dsc + files) into the pool."""
        self.components.setdefault(component, None)
        pool = os.path.join(self.root, "pool", component)
        for path in list(debs) + list(sources):
            name = os.path.basename(path)
            sub = os.path.join(pool, name[0], name.split("_")[0])
            os.makedirs(sub, exist_ok=True)
            dest = os.path.join(sub, name)
            if os.path.exists(dest):
                continue
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy(path, dest)

    def publish(self, key, sign_extra=()):
        """Packages + Sources per component, Release, InRelease signed by ``key``."""
        dists = os.path.join(self.root, "dists", self.suite)
        for comp in sorted(self.components):
            bdir = os.path.join(dists, comp, "binary-" + self.arch)
            sdir = os.path.join(dists, comp, "source")
            os.makedirs(bdir, exist_ok=True)
            os.makedirs(sdir, exist_ok=True)
            os.makedirs(os.path.join(self.root, "pool", comp), exist_ok=True)
            for kind, out in (("packages", os.path.join(bdir, "Packages")), ("sources", os.path.join(sdir, "Sources"))):
                text = subprocess.run(["apt-ftparchive", kind, "pool/" + comp], cwd=self.root, check=True,
                                      capture_output=True, text=True).stdout
                with open(out, "w") as f:
                    f.write(text)
        release = os.path.join(dists, "Release")
        if os.path.exists(release):
            os.unlink(release)
        opts = []
        for k, v in (("Origin", self.origin), ("Label", self.origin), ("Suite", self.suite),
                     ("Codename", self.suite), ("Architectures", self.arch),
                     ("Components", " ".join(sorted(self.components)))):
            opts += ["-o", "APT::FTPArchive::Release::%s=%s" % (k, v)]
        text = subprocess.run(["apt-ftparchive"] + opts + ["release", "."], cwd=dists, check=True,
                              capture_output=True, text=True).stdout
        with open(release, "w") as f:
            f.write(text)
        key.clearsign(release, os.path.join(dists, "InRelease"), extra=sign_extra)
        return self

    def path(self, *parts):
        return os.path.join(self.root, *parts)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def serve(root):
    """Serve ``root`` on 127.0.0.1 (an ephemeral port); returns (base URL, stop function)."""
    handler = lambda *a, **kw: _Quiet(*a, directory=str(root), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return "http://127.0.0.1:%d" % server.server_address[1], server.shutdown


def _control(name, version, description, arch="armhf"):
    return ("Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: MIGOS tests <test@invalid>\n"
            "Section: kernel\nPriority: optional\nDescription: %s\n" % (name, version, arch, description))


def _unpack(deb, dest):
    os.makedirs(dest, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", deb, dest], check=True)


def raspberrypi_standins(debian_archives, out_dir, board_dtbs, flavour_image="kernel7.img",
                         flavour_suffix="-v7+"):
    """Build stand-in ``raspberrypi-kernel`` and ``raspberrypi-bootloader`` .debs.

    From Debian's cached armhf ``linux-image-*-armmp`` and ``raspi-firmware``: the armmp
    vmlinuz as /boot/``flavour_image``, its upstream dtbs under the firmware's names
    (``board_dtbs``: {firmware name: upstream name}) in /boot, its modules as
    /lib/modules/RELEASE``flavour_suffix``; the firmware blobs in /boot. Returns both paths.
    """
    kernels = sorted(glob.glob(os.path.join(debian_archives, "linux-image-*-armmp_*_armhf.deb")))
    firmware = sorted(glob.glob(os.path.join(debian_archives, "raspi-firmware_*.deb")))
    if not kernels or not firmware:
        raise RuntimeError("no linux-image-*-armmp / raspi-firmware .deb in %s; build debian-armhf first "
                           "(doit build target=debian-armhf)" % debian_archives)
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(dir=out_dir)
    try:
        src = os.path.join(work, "src")
        _unpack(kernels[-1], src)
        _unpack(firmware[-1], src)
        (vmlinuz,) = glob.glob(os.path.join(src, "boot", "vmlinuz-*-armmp"))
        release = os.path.basename(vmlinuz)[len("vmlinuz-"):]
        kversion = debfile.DebFile(kernels[-1]).debcontrol()["Version"]

        kpkg = os.path.join(work, "raspberrypi-kernel")
        os.makedirs(os.path.join(kpkg, "DEBIAN"))
        os.makedirs(os.path.join(kpkg, "boot"))
        shutil.copy(vmlinuz, os.path.join(kpkg, "boot", flavour_image))
        dtb_dir = os.path.join(src, "usr", "lib", "linux-image-" + release)
        for fw_name, upstream in sorted(board_dtbs.items()):
            shutil.copy(os.path.join(dtb_dir, os.path.basename(upstream)), os.path.join(kpkg, "boot", fw_name))
        mods = os.path.join(src, "lib", "modules", release)
        if not os.path.isdir(mods):
            mods = os.path.join(src, "usr", "lib", "modules", release)
        shutil.copytree(mods, os.path.join(kpkg, "lib", "modules", release + flavour_suffix), symlinks=True)
        with open(os.path.join(kpkg, "DEBIAN", "control"), "w") as f:
            f.write(_control("raspberrypi-kernel", "1:%s+migostest" % kversion,
                             "TEST STAND-IN: Debian armmp kernel at Raspberry Pi kernel paths"))

        bpkg = os.path.join(work, "raspberrypi-bootloader")
        os.makedirs(os.path.join(bpkg, "DEBIAN"))
        os.makedirs(os.path.join(bpkg, "boot"))
        fw_dir = os.path.join(src, "usr", "lib", "raspi-firmware")
        for pattern in ("bootcode.bin", "start*.elf", "fixup*.dat"):
            for p in glob.glob(os.path.join(fw_dir, pattern)):
                shutil.copy(p, os.path.join(bpkg, "boot", os.path.basename(p)))
        fwversion = debfile.DebFile(firmware[-1]).debcontrol()["Version"]
        with open(os.path.join(bpkg, "DEBIAN", "control"), "w") as f:
            f.write(_control("raspberrypi-bootloader", "1:%s+migostest" % fwversion,
                             "TEST STAND-IN: Debian raspi-firmware at Raspberry Pi bootloader paths"))
        out = []
        for pkg in (kpkg, bpkg):
            deb = os.path.join(out_dir, os.path.basename(pkg) + "_migostest_armhf.deb")
            subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", pkg, deb], check=True,
                           capture_output=True)
            out.append(deb)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
