"""gen_migos-boot on disk image files and loop devices: writes, updates, --format, and
every refusal (exit 2, one line, the target byte-for-byte unchanged)."""

import os
import subprocess
import sys

import pytest

from migos.genboot import fatswap, mtools, probe, write_files
from migos.stage1 import tarball
from tests.conftest import MIGOS_PKG, run_migos

MiB = 1024 * 1024


def fake_tarball(d, itb=b"FIT" * 1000, name="test"):
    path = tarball.make_fake(str(d), name=name, itb=itb)
    return path, tarball.load(path).files


def card(path, size=80 * MiB, ptype="c", part_mib=None, mkfs=True, fat_bits=None):
    with open(path, "wb") as f:
        f.truncate(size)
    sectors = (part_mib * MiB // 512) if part_mib else (size // 512 - 8192)
    subprocess.run(["sfdisk", "-q", path], input=("label: dos\nstart=8192, size=%d, type=%s\n" % (
        sectors, ptype)).encode(), check=True)
    if mkfs:
        argv = ["mkfs.fat", "--offset", "8192", "-n", "OLDBOOT"]
        if fat_bits:
            argv += ["-F", str(fat_bits)]
        subprocess.run(argv + [path, str(sectors // 2)], check=True, stdout=subprocess.DEVNULL)
    return path


def card_files(path):
    fat = mtools.Fat(path, 8192 * 512)
    return fat


def assert_refused(target, *args, words, image=None):
    image = image or target
    before = tarball.sha256_file(image)
    proc = run_migos("gen-boot", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert tarball.sha256_file(image) == before
    return lines[0]


def assert_installed(image, files):
    fat = card_files(image)
    for rel, data in files.items():
        assert fat.get(rel) == data, rel
    assert not fat.exists(mtools.STAGING)


def test_image_format_write_update(tmp_path):
    tar, files = fake_tarball(tmp_path / "a")
    img = str(tmp_path / "card.img")
    with open(img, "wb") as f:
        f.truncate(80 * MiB)
    assert_refused(img, tar, img, words="no MBR partition table")
    proc = run_migos("gen-boot", "--format", tar, img)
    assert proc.returncode == 0, proc.stderr
    assert_installed(img, files)
    # an update with a different build replaces every file; other files stay
    card_files(img).put("user-file.txt", b"keep me")
    tar2, files2 = fake_tarball(tmp_path / "b", itb=os.urandom(200000))
    proc = subprocess.run([sys.executable, "-c", "import sys; from migos.genboot import "
                           "script_main; sys.exit(script_main())", tar2, img],
                          env=dict(os.environ, PYTHONPATH=MIGOS_PKG), stderr=subprocess.PIPE,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    assert_installed(img, files2)
    assert card_files(img).get("user-file.txt") == b"keep me"


def test_image_refusals(tmp_path):
    tar, files = fake_tarball(tmp_path / "a", itb=os.urandom(3 * MiB))
    linux = card(str(tmp_path / "linux.img"), ptype="83", mkfs=False)
    assert_refused(linux, tar, linux, words="type 0x83, not FAT")
    nofs = card(str(tmp_path / "nofs.img"), mkfs=False)
    assert_refused(nofs, tar, nofs, words="holds no FAT file system")
    small = card(str(tmp_path / "small.img"), size=16 * MiB, part_mib=2)
    assert_refused(small, tar, small, words="too small")
    full = card(str(tmp_path / "full.img"), size=24 * MiB, part_mib=8)
    card_files(full).put("big.bin", b"\0" * (6 * MiB))
    assert_refused(full, tar, full, words="KiB free")
    tiny = str(tmp_path / "tiny.img")
    with open(tiny, "wb") as f:
        f.truncate(6 * MiB)
    assert_refused(tiny, "--format", tar, tiny, words="too small for a MIGOS boot card")
    # a tarball that does not match its SHA256SUMS, or has none
    good = card(str(tmp_path / "good.img"))
    with open(tar, "ab") as f:
        f.write(b"x")
    assert_refused(good, tar, good, words="does not match its SHA256SUMS")
    os.unlink(os.path.join(os.path.dirname(tar), "SHA256SUMS"))
    assert_refused(good, tar, good, words="no SHA256SUMS")
    tar2, _ = fake_tarball(tmp_path / "b")
    assert_refused(good, tar2, str(tmp_path / "missing.img"), words="No such file", image=good)
    assert_refused(good, tar2, "/dev/null", words="neither a block device nor", image=good)


def test_pulled_card_keeps_old_boot(tmp_path):
    """A failure while copying leaves the previous boot files as they were; the next run
    removes the stale staging directory and completes."""
    tar_old, files_old = fake_tarball(tmp_path / "old")
    img = card(str(tmp_path / "card.img"))
    assert run_migos("gen-boot", tar_old, img).returncode == 0
    tar_new, files_new = fake_tarball(tmp_path / "new", itb=b"NEW" * 9000)

    class Pulled(mtools.Fat):
        n = 0

        def put(self, path, data):
            Pulled.n += 1
            if Pulled.n == 6:
                raise mtools.MtoolsError("card pulled")
            return mtools.Fat.put(self, path, data)
    with pytest.raises(mtools.MtoolsError):
        write_files(Pulled(img, 8192 * 512), files_new)
    fat = card_files(img)
    assert fat.exists(mtools.STAGING)
    for rel, data in files_old.items():
        assert fat.get(rel) == data
    assert run_migos("gen-boot", tar_new, img).returncode == 0
    assert_installed(img, files_new)


@pytest.fixture
def loops(needs_root):
    made = []

    def attach(path, *extra):
        dev = subprocess.run(["losetup", "-f", "--show"] + list(extra) + [path], check=True,
                             stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
        made.append(dev)
        return dev
    yield attach
    for dev in reversed(made):
        subprocess.run(["umount", dev], stderr=subprocess.DEVNULL)
        subprocess.run(["losetup", "-d", dev])


def test_loop_devices(tmp_path, loops):
    tar, files = fake_tarball(tmp_path / "a")
    img = card(str(tmp_path / "card.img"))
    dev = loops(img)
    assert probe.facts(dev)["kind"] == "block"
    assert_refused(dev, tar, dev, words="is not a removable disk", image=img)
    proc = run_migos("gen-boot", "--force", tar, dev)
    assert proc.returncode == 0, proc.stderr
    assert_installed(img, files)
    # --format on a loop device
    blank = str(tmp_path / "blank.img")
    with open(blank, "wb") as f:
        f.truncate(72 * MiB)
    bdev = loops(blank)
    assert_refused(bdev, tar, bdev, words="is not a removable disk", image=blank)
    assert run_migos("gen-boot", "--force", "--format", tar, bdev).returncode == 0
    assert_installed(blank, files)
    # read-only
    rdev = loops(img, "-r")
    assert_refused(rdev, "--force", tar, rdev, words="read-only", image=img)


def test_mounted_disks_refused_even_with_force(tmp_path, loops):
    tar, _ = fake_tarball(tmp_path / "a")
    img = str(tmp_path / "ext.img")
    with open(img, "wb") as f:
        f.truncate(32 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True)
    dev = loops(img)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", dev, str(mnt)], check=True)
    assert_refused(dev, "--force", tar, dev, words="is mounted", image=img)
    assert_refused(img, "--force", "--format", tar, img, words="is mounted")  # via its loop


def test_system_disk_refused(tmp_path, needs_root):
    tar, _ = fake_tarball(tmp_path / "a")
    root_dev = None
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        if f[4] == "/":
            src = f[f.index("-") + 2]
            if src.startswith("/dev/") and os.path.exists(src):
                root_dev = src
    if root_dev is None:
        pytest.skip("/ is not on a block device here")
    facts = probe.facts(root_dev)
    disk = root_dev
    if facts.get("is_partition"):
        pytest.skip("/ is on a partition; the whole-disk case is covered by the unit tests")
    proc = run_migos("gen-boot", "--force", "--format", tar, disk)
    assert proc.returncode == 2 and "running system" in proc.stderr, proc.stderr


def fsck_complaints(img, tmp_path):
    """fsck.fat -n on the card's partition (copied out: fsck.fat takes no offset): the lines
    that are not about lost or free clusters, which a cut in a replacement may leave."""
    part = str(tmp_path / "part.img")
    with open(img, "rb") as src, open(part, "wb") as dst:
        src.seek(8192 * 512)
        dst.write(src.read())
    proc = subprocess.run(["fsck.fat", "-n", part], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    harmless = ("fsck.fat", "Checking", "Leaving", "Reclaimed", "unused clusters", "Free cluster",
                "  Auto-setting", "  Setting free", "Lost", "Perform changes", "Reclaim",
                "is not a valid", "Leave filesystem", "part.img:", "Dirty bit", "was not properly",
                "FATs differ but appear to be intact", "  Using first FAT")
    return [l for l in proc.stdout.splitlines() if l.strip() and not l.startswith(harmless)
            and "bytes in" not in l and "files," not in l and "clusters" not in l]


@pytest.mark.parametrize("bits", [16, 32])
def test_a_cut_at_every_write_of_a_replacement(tmp_path, bits):
    """Replacing migos.itb (many clusters) and config.txt: a power cut after any single write
    (prefixes of fatswap's writes applied to a copy of the card: every one up to the switch,
    a sample of the cluster-freeing ones after it) leaves each file whole,
    old or new, never missing, and fsck.fat finds at most lost clusters."""
    tar_old, old = fake_tarball(tmp_path / "old", itb=os.urandom(300000))
    img = card(str(tmp_path / "card.img"), fat_bits=bits)
    assert run_migos("gen-boot", tar_old, img).returncode == 0
    new = {"migos.itb": os.urandom(500000), "config.txt": old["config.txt"] + b"# new build\n"}
    fat = card_files(img)
    fat.mkdir(mtools.STAGING)
    for rel, data in new.items():
        fat.put(mtools.STAGING + "/" + rel, data)
    base = 8192 * 512
    for rel in ("migos.itb", "config.txt"):
        with open(img, "rb") as f:
            steps = fatswap.plan(lambda off, n: os.pread(f.fileno(), n, base + off),
                                 mtools.STAGING + "/" + rel, rel)
        flat = [w for s in steps for w in s]
        writes = len(flat)
        switch = [i for i, w in enumerate(flat) if len(w.data) == 19]   # the directory slot
        assert writes >= 3 and len(switch) == 1
        # every write up to just past the switch, then some of the cluster-freeing ones
        ks = set(range(min(writes, switch[0] + 3))) | {(switch[0] + writes) // 2, writes - 1, writes}
        for k in sorted(ks):
            cut = str(tmp_path / "cut.img")
            subprocess.run(["cp", "--sparse=always", img, cut], check=True)
            fd = os.open(cut, os.O_RDWR)
            try:
                assert fatswap.apply(fd, base, steps, limit=k) == k
            finally:
                os.close(fd)
            got = card_files(cut).get(rel)
            assert got == (new[rel] if k > switch[0] else old[rel]), (rel, k)
            assert fsck_complaints(cut, tmp_path) == [], (rel, k)
        fatswap.replace(img, base, mtools.STAGING + "/" + rel, rel)
        assert card_files(img).get(rel) == new[rel]
    assert fsck_complaints(img, tmp_path) == []
