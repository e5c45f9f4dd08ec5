"""Test-only signed apt archives on 127.0.0.1 (helper for the mirror and signature tests).

``Key`` is a throwaway OpenPGP key in its own GNUPGHOME (generated at test time, never
committed); ``Archive`` lays out ``pool/`` and ``dists/SUITE/`` from a list of .debs
(and optionally source packages), writes Packages/Sources/Release with apt-ftparchive
and signs InRelease with a ``Key``; ``serve`` publishes directories under URL prefixes
on 127.0.0.1 only. ``raspberrypi_standins`` builds the two stand-in packages described
in tests/system/test_raspbian_mirror.py, from Debian kernels ``standin_kernel_debs``
downloads once (the only network access of the test suite outside 127.0.0.1: Debian's
archive, signatures checked, cached under build/cache/standins/).
"""

import glob
import http.server
import os
import re
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


# Stand-in kernels from Debian's archive (see tests/system/test_raspbian_mirror.py), one per
# Raspberry Pi kernel file: flavour -> (Debian architecture, metapackage, /boot image, module suffix)
STANDIN_KERNELS = {
    "v6": ("armel", "linux-image-rpi", "kernel.img", "+"),          # ARMv6, BCM2835 (Pi 1 / Zero)
    "v7": ("armhf", "linux-image-armmp", "kernel7.img", "-v7+"),     # ARMv7 (Pi 2 / 3)
    "v7l": ("armhf", "linux-image-armmp-lpae", "kernel7l.img", "-v7l+"),  # ARMv7 + LPAE (Pi 4)
}
DEBIAN_URL = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def debian_debs(cache, arch, packages):
    """Download ``packages`` (and what they depend on) for ``arch`` from Debian's archive with the
    build's own apt machinery (private config, Debian's keyring, signatures checked) into
    ``cache/ARCH/archives``; {package name: .deb path} of the resolved set. A cached result is
    reused without touching the network."""
    import json
    from types import SimpleNamespace

    from stages import fetch, target
    base = os.path.join(os.path.abspath(cache), arch)
    index = os.path.join(base, "debs-%s.json" % "+".join(sorted(packages)))
    archives = os.path.join(base, "archives")
    if os.path.exists(index):
        with open(index) as f:
            got = {n: os.path.join(archives, p) for n, p in json.load(f).items()}
        if all(os.path.isfile(p) for p in got.values()):
            return got
    t = SimpleNamespace(arch=arch, archives=[target.Archive(
        name="debian", url=DEBIAN_URL, suite="bookworm", components=["main"], keyring=DEBIAN_KEYRING)])
    dirs = {"base": os.path.join(base, "apt"), "conf": os.path.join(base, "apt", "apt.conf"),
            "sources": os.path.join(base, "apt", "sources.list"), "status": os.path.join(base, "apt", "status"),
            "archives": os.path.join(base, "archives"), "lists": os.path.join(base, "lists")}
    for d in (os.path.join(dirs["archives"], "partial"), os.path.join(dirs["lists"], "partial"),
              os.path.join(dirs["base"], "cache"), os.path.join(dirs["base"], "state")):
        os.makedirs(d, exist_ok=True)
    with open(dirs["conf"], "w") as f:
        f.write(fetch.apt_config(t, dirs))
    with open(dirs["sources"], "w") as f:
        f.write(fetch.sources_list(t, keyrings=fetch.install_keyrings(t, dirs["base"])))
    open(dirs["status"], "w").close()
    fetch.apt(dirs, "update", "--error-on=any")
    resolved = fetch.resolve(dirs, list(packages))
    fetch.apt(dirs, "install", "-y", "--download-only", *packages)
    got = {name: os.path.join(dirs["archives"], fetch.deb_filename(name, version, a))
           for name, version, a in resolved}
    with open(index, "w") as f:
        json.dump({n: os.path.basename(p) for n, p in got.items()}, f, indent=1, sort_keys=True)
    return got


def standin_kernel_debs(cache):
    """{flavour: the linux-image-VERSION-FLAVOUR .deb} of every stand-in kernel (downloaded once)."""
    out = {}
    for flavour, (arch, meta, _, _) in STANDIN_KERNELS.items():
        debs = debian_debs(cache, arch, [meta])
        suffix = meta[len("linux-image-"):]
        real = [p for n, p in debs.items() if re.match(r"^linux-image-\d+\.\d+\.\d+-\d+-%s$" % re.escape(suffix), n)]
        if len(real) != 1:
            raise RuntimeError("%s for %s resolved to %s, not one kernel package" % (meta, arch, sorted(debs)))
        out[flavour] = real[0]
    return out


def raspberrypi_standins(kernel_debs, firmware_deb, out_dir, board_dtbs, dtb_flavour="v7"):
    """Build stand-in ``raspberrypi-kernel`` and ``raspberrypi-bootloader`` .debs (armhf).

    ``kernel_debs``: {flavour (v6, v7, v7l): a Debian linux-image-*.deb}. Each kernel goes to
    /boot/kernel.img, kernel7.img or kernel7l.img and its modules to /lib/modules/RELEASE+,
    RELEASE-v7+, RELEASE-v7l+ (the v6 one named UPSTREAM_VERSION+, as Raspberry Pi's are);
    the ``dtb_flavour`` kernel's upstream dtbs go to /boot under the firmware's names
    (``board_dtbs``: {firmware name: upstream name}); Debian's raspi-firmware blobs
    (``firmware_deb``) to /boot of the bootloader package. Returns both paths.

    Kept in ``out_dir``/KEY/, KEY a digest of the inputs and of this code: a second call with
    the same inputs returns the same files without rebuilding them.
    """
    import hashlib
    import inspect
    import json
    h = hashlib.sha256(json.dumps([sorted((f, os.path.basename(d)) for f, d in kernel_debs.items()),
                                   os.path.basename(firmware_deb), sorted(board_dtbs.items()), dtb_flavour,
                                   STANDIN_KERNELS]).encode())
    h.update(inspect.getsource(raspberrypi_standins).encode())
    out_dir = os.path.join(out_dir, h.hexdigest()[:16])
    names = [os.path.join(out_dir, n + "_migostest_armhf.deb") for n in ("raspberrypi-kernel", "raspberrypi-bootloader")]
    if all(os.path.isfile(n) for n in names):
        return names
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(dir=out_dir)
    try:
        kpkg = os.path.join(work, "raspberrypi-kernel")
        os.makedirs(os.path.join(kpkg, "DEBIAN"))
        os.makedirs(os.path.join(kpkg, "boot"))
        versions = []
        for flavour, deb in sorted(kernel_debs.items()):
            _, _, image, suffix = STANDIN_KERNELS[flavour]
            src = os.path.join(work, "src-" + flavour)
            _unpack(deb, src)
            (vmlinuz,) = glob.glob(os.path.join(src, "boot", "vmlinuz-*"))
            release = os.path.basename(vmlinuz)[len("vmlinuz-"):]
            version = debfile.DebFile(deb).debcontrol()["Version"]
            versions.append("%s=%s" % (flavour, version))
            shutil.copy(vmlinuz, os.path.join(kpkg, "boot", image))
            mods = os.path.join(src, "lib", "modules", release)
            if not os.path.isdir(mods):
                mods = os.path.join(src, "usr", "lib", "modules", release)
            name = (version.split("-")[0] + "+") if suffix == "+" else release + suffix
            shutil.copytree(mods, os.path.join(kpkg, "lib", "modules", name), symlinks=True)
            if flavour == dtb_flavour:
                dtb_dir = os.path.join(src, "usr", "lib", "linux-image-" + release)
                for fw_name, upstream in sorted(board_dtbs.items()):
                    shutil.copy(os.path.join(dtb_dir, os.path.basename(upstream)),
                                os.path.join(kpkg, "boot", fw_name))
            shutil.rmtree(src)
        with open(os.path.join(kpkg, "DEBIAN", "control"), "w") as f:
            f.write(_control("raspberrypi-kernel", "1:1.%s+migostest" % versions[0].split("=")[1].replace("-", "."),
                             "TEST STAND-IN: Debian kernels (%s) at Raspberry Pi kernel paths" % ", ".join(versions)))

        bpkg = os.path.join(work, "raspberrypi-bootloader")
        os.makedirs(os.path.join(bpkg, "DEBIAN"))
        os.makedirs(os.path.join(bpkg, "boot"))
        src = os.path.join(work, "src-firmware")
        _unpack(firmware_deb, src)
        fw_dir = os.path.join(src, "usr", "lib", "raspi-firmware")
        for pattern in ("bootcode.bin", "start*.elf", "fixup*.dat"):
            for p in glob.glob(os.path.join(fw_dir, pattern)):
                shutil.copy(p, os.path.join(bpkg, "boot", os.path.basename(p)))
        fwversion = debfile.DebFile(firmware_deb).debcontrol()["Version"]
        with open(os.path.join(bpkg, "DEBIAN", "control"), "w") as f:
            f.write(_control("raspberrypi-bootloader", "1:%s+migostest" % fwversion,
                             "TEST STAND-IN: Debian raspi-firmware at Raspberry Pi bootloader paths"))
        for pkg, deb in zip((kpkg, bpkg), names):
            subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", pkg, deb + ".tmp"],
                           check=True, capture_output=True)
        for deb in names:
            os.replace(deb + ".tmp", deb)
        return names
    finally:
        shutil.rmtree(work, ignore_errors=True)
