"""Bad inputs: a one-line error naming the problem, exit 2, the disk unchanged (root)."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import balena_api  # noqa: E402
import balena_image as bi  # noqa: E402

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices)")]


@pytest.fixture(scope="module")
def k(tmp_path_factory):
    return bi.kit(tmp_path_factory.mktemp("migrate-bad"))


@pytest.fixture
def disk(k, request):
    path = k.fresh_disk("bad-%s.img" % request.node.name.replace("/", "_")[:60])
    yield path
    os.unlink(path)


def refused(k, disk, *args, code=2, **kw):
    """Run migrate on a loop device over ``disk``; assert exit ``code`` (2 bad input, 3 source
    unreachable), one line, disk unchanged."""
    before = bi.file_sha(disk)
    with bi.Loop(disk) as dev:
        proc = bi.run_migrate("--device", dev, *args, **kw)
    assert proc.returncode == code, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("migos migrate: "), last
    assert "; " in last  # problem; what to do
    assert bi.file_sha(disk) == before, "the disk was changed"
    return last


def corrupt_copy(src, dst, at_fraction, nbytes=64):
    shutil.copyfile(src, dst)
    size = os.path.getsize(dst)
    with open(dst, "r+b") as f:
        f.seek(int(size * at_fraction))
        f.write(bytes(b ^ 0xa5 for b in f.read(nbytes)) if False else os.urandom(nbytes))
    return dst


def truncated_copy(src, dst, fraction):
    with open(src, "rb") as f, open(dst, "wb") as out:
        out.write(f.read(int(os.path.getsize(src) * fraction)))
    return dst


# truncated and corrupt images -------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raw", "xz", "zst", "zip"])
def test_truncated_image_detected_before_writing(k, disk, tmp_path, fmt):
    img = truncated_copy(k.compressed(fmt), str(tmp_path / ("cut." + fmt)), 0.6)
    msg = refused(k, disk, "--image", img, "-c", k.config)
    assert "truncated" in msg


@pytest.mark.parametrize("fmt", ["gz", "zst", "raw"])
def test_truncated_inside_resin_boot(k, disk, tmp_path, fmt):
    # cut inside the first MiBs: found while checking resin-boot, before any write
    src = k.compressed(fmt)
    img = str(tmp_path / ("early." + fmt))
    with open(src, "rb") as f, open(img, "wb") as out:
        out.write(f.read(5 * bi.MIB if fmt == "raw" else 200 * 1024))
    msg = refused(k, disk, "--image", img, "-c", k.config)
    assert "truncated" in msg or "ends" in msg


@pytest.mark.parametrize("fmt,cut", [("gz", "truncated"), ("gz", "corrupt"), ("zst", "corrupt"),
                                     ("xz", "corrupt")])
def test_damage_late_in_the_stream_refused_before_writing(k, disk, tmp_path, fmt, cut):
    """The verify-first pass decompresses the whole image before the first write, so damage
    that a stream only meets late (a cut .gz, a flipped byte near the end) is refused with
    exit 2 and the disk unchanged: the old OS can still be given back."""
    src = k.compressed(fmt)
    img = str(tmp_path / ("late." + fmt))
    if cut == "truncated":
        truncated_copy(src, img, 0.7)
    else:
        corrupt_copy(src, img, 0.8, 256)
    msg = refused(k, disk, "--image", img, "-c", k.config)
    assert "corrupt" in msg or "truncated" in msg
    assert "nothing was written" in msg


def test_truncated_gz_late_keeps_guarantee_and_resumes(k, disk, tmp_path):
    """Without the verify-first pass, a cut .gz is found only when the stream reaches the cut,
    after writes began: exit 1, MBR and old p1 untouched (MIGOS still boots), and the good
    image then resumes."""
    img = truncated_copy(k.compressed("gz"), str(tmp_path / "late.gz"), 0.7)
    mbr = bi.read_region(disk, 0, 512)
    p1 = bi.region_sha(disk, *k.old_info["p1"])
    with bi.Loop(disk) as dev:
        proc = bi.run_migrate("--device", dev, "--image", img, "-c", k.config, "--no-verify-first")
        assert proc.returncode == 1
        last = proc.stderr.strip().splitlines()[-1]
        assert "truncated" in last and "resume" in last
        assert bi.read_region(disk, 0, 512) == mbr
        assert bi.region_sha(disk, *k.old_info["p1"]) == p1
        proc = bi.run_migrate("--device", dev, "--image", k.compressed("gz"), "-c", k.config)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert '"decision": "resume"' in proc.stderr
    assert bi.verify_migrated(disk, k) == []


@pytest.mark.parametrize("fmt", ["gz", "xz"])
def test_corrupt_stream_early(k, disk, tmp_path, fmt):
    img = corrupt_copy(k.compressed(fmt), str(tmp_path / ("bad." + fmt)), 0.0005, 256)
    msg = refused(k, disk, "--image", img, "-c", k.config)
    assert "corrupt" in msg or "not a readable FAT" in msg or "truncated" in msg or \
        "device-type.json" in msg


@pytest.mark.parametrize("fmt,where", [("gz", 0.8), ("xz", 0.8), ("zst", 0.8), ("zst", 0.0005)])
def test_corrupt_stream_late_never_switches(k, disk, tmp_path, fmt, where):
    """Corruption found only later in the stream (zstd: often only by the frame checksum at the
    very end) when the verify-first pass is skipped: exit non-zero, never switched, MIGOS still
    boots; then the intact image resumes, rewriting whatever the corrupt run left wrong."""
    img = corrupt_copy(k.compressed(fmt), str(tmp_path / ("late." + fmt)), where, 256)
    mbr = bi.read_region(disk, 0, 512)
    p1 = bi.region_sha(disk, *k.old_info["p1"])
    with bi.Loop(disk) as dev:
        proc = bi.run_migrate("--device", dev, "--image", img, "-c", k.config, "--no-verify-first")
        assert proc.returncode in (1, 2)
        assert "corrupt" in proc.stderr.strip().splitlines()[-1]
        assert bi.read_region(disk, 0, 512) == mbr
        assert bi.region_sha(disk, *k.old_info["p1"]) == p1
        proc = bi.run_migrate("--device", dev, "--image", k.compressed(fmt), "-c", k.config)
        if proc.returncode == 2:
            # the corruption was inside the image's head, which identifies the image: the
            # journal is refused as another image's, and the user is told how to start over
            assert "another image" in proc.stderr and where < 0.01
            proc = bi.run_migrate("--device", dev, "--image", k.compressed(fmt), "-c", k.config,
                                  "--discard-journal")
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert bi.verify_migrated(disk, k) == []


# the wrong image ----------------------------------------------------------------------------

def test_wrong_device_type(k, disk, tmp_path):
    cfg = k.write_config(str(tmp_path / "c.json"), deviceType="raspberrypi4-64")
    msg = refused(k, disk, "--image", k.raw, "-c", cfg)
    assert "raspberrypi3" in msg and "raspberrypi4-64" in msg


def test_non_balena_image_two_partitions(k, disk):
    msg = refused(k, disk, "--image", k.old, "-c", k.config)
    assert "not balenaOS-shaped" in msg


def test_non_balena_image_random_bytes(k, disk, tmp_path):
    img = str(tmp_path / "random.img")
    with open(img, "wb") as f:
        f.write(os.urandom(4 * bi.MIB))
    msg = refused(k, disk, "--image", img, "-c", k.config)
    assert "MBR" in msg


def test_balena_shaped_but_wrong_labels(k, disk, tmp_path):
    img = bi.make_balena_image(str(tmp_path / "nolabel.img"), labels={"boot": "BOOT"},
                               root_mib=8, state_mib=4, data_mib=4, fill=0.1)
    msg = refused(k, disk, "--image", img["path"], "-c", k.config)
    assert "resin-boot" in msg


def test_no_device_type_json(k, disk, tmp_path):
    img = str(tmp_path / "nodt.img")
    shutil.copyfile(k.raw, img)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mdel", "-i", "%s@@%d" % (img, k.image["boot"][0]), "::device-type.json"],
                   check=True, env=env)
    msg = refused(k, disk, "--image", img, "-c", k.config)
    assert "device-type.json" in msg


def test_disk_too_small(k, tmp_path):
    old = bi.make_old_os_disk(str(tmp_path / "small.img"), 160, 4, 64)
    try:
        msg = refused(k, old["path"], "--image", k.raw, "-c", k.config)
        assert "too small" in msg
    finally:
        os.unlink(old["path"])


def test_device_already_balena(k, disk):
    # a disk that already holds the image (no journal): nothing to migrate
    shutil.copyfile(k.raw, disk)
    with open(disk, "r+b") as f:
        f.truncate(256 * bi.MIB)
    msg = refused(k, disk, "--image", k.raw, "-c", k.config)
    assert "already" in msg


# config.json -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,word", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"deviceType": "raspberrypi3", "applicationId": 1, "apiKey": "k"}), "apiEndpoint"),
    (json.dumps({"apiEndpoint": "https://x", "applicationId": 1, "apiKey": "k"}), "deviceType"),
    (json.dumps({"deviceType": "raspberrypi3", "apiEndpoint": "https://x", "applicationId": 1}),
     "apiKey"),
    (json.dumps({"deviceType": "raspberrypi3", "apiEndpoint": "ftp://x", "applicationId": 1,
                 "apiKey": "k"}), "http"),
])
def test_config_malformed_or_incomplete(k, disk, tmp_path, text, word):
    cfg = tmp_path / "config.json"
    cfg.write_text(text)
    msg = refused(k, disk, "--image", k.raw, "-c", str(cfg))
    assert word in msg


def test_config_missing(k, disk, tmp_path):
    msg = refused(k, disk, "--image", k.raw, "-c", str(tmp_path / "nope.json"))
    assert "cannot read" in msg
    # and without -c, none on the old boot partition either
    msg = refused(k, disk, "--image", k.raw)
    assert "config.json" in msg


def test_bad_hostname_and_nm_file(k, disk, tmp_path):
    assert "hostname" in refused(k, disk, "--image", k.raw, "-c", k.config, "--hostname=-bad_")
    assert "NetworkManager" in refused(k, disk, "--image", k.raw, "-c", k.config,
                                       "--nwmgr-cfg", str(tmp_path / "missing"))


# the journal -------------------------------------------------------------------------------

def interrupted(k, disk, img):
    """Leave a journal behind: a migration that stops at a late corrupt/cut spot (found only
    while writing, since the verify-first pass is skipped)."""
    with bi.Loop(disk) as dev:
        proc = bi.run_migrate("--device", dev, "--image", img, "-c", k.config, "--no-verify-first")
    assert proc.returncode == 1, proc.stderr[-2000:]


def test_journal_from_another_image(k, disk, tmp_path):
    interrupted(k, disk, truncated_copy(k.compressed("gz"), str(tmp_path / "cut.gz"), 0.7))
    other = bi.make_balena_image(str(tmp_path / "other.img"), seed=99, root_mib=8, state_mib=4,
                                 data_mib=4, fill=0.2)
    msg = refused(k, disk, "--image", other["path"], "-c", k.config)
    assert "another image" in msg and "--discard-journal" in msg
    # --discard-journal starts over with the other image
    with bi.Loop(disk) as dev:
        proc = bi.run_migrate("--device", dev, "--image", other["path"], "-c", k.config,
                              "--discard-journal")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_journal_from_another_device(k, disk, tmp_path):
    interrupted(k, disk, truncated_copy(k.compressed("gz"), str(tmp_path / "cut.gz"), 0.7))
    # the same journal on a disk with another MBR (other disk signature) and another size
    for size_mib, sig in ((256, b"\x11\x22\x33\x44"), (320, None)):
        other = k.fresh_disk("other-dev.img")
        if size_mib != 256:
            with open(other, "r+b") as f:
                f.truncate(size_mib * bi.MIB)
        with open(other, "r+b") as f:
            if sig:
                f.seek(440)
                f.write(sig)
            for off, n in k.journal_holes():
                f.seek(off)
                f.write(bi.read_region(disk, off, n))
        msg = refused(k, other, "--image", k.compressed("gz"), "-c", k.config)
        assert "another device" in msg or "device of" in msg
        os.unlink(other)


# network and API errors ------------------------------------------------------------------------

def test_unreachable_url(k, disk):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    msg = refused(k, disk, "--image", "http://127.0.0.1:%d/balena.img.gz" % port, "-c", k.config,
                  code=3)
    assert "cannot reach" in msg


@pytest.mark.parametrize("where,code,word", [
    ("/download", 401, "access denied"), ("/download", 404, "not found"),
    ("/download", 500, "HTTP 500"), ("/v6/release", 401, "access denied"),
    ("/v6/release", 500, "HTTP 500"), ("/files/img.gz", 404, "not found"),
])
def test_api_http_errors(k, disk, tmp_path, where, code, word):
    gz = k.compressed("gz")
    with balena_api.BalenaApi(releases={"raspberrypi3": ["2.50.1+rev1"]},
                              images={("raspberrypi3", "2.50.1+rev1"): gz},
                              files={"img.gz": gz}, status={where: code}) as api:
        cfg = k.write_config(str(tmp_path / "c.json"), apiEndpoint=api.url)
        want = 3 if code >= 500 else 2      # a server error may pass: try again later
        if where.startswith("/files"):
            msg = refused(k, disk, "--image", api.url + where, "-c", cfg, code=want)
        else:
            msg = refused(k, disk, "-c", cfg, code=want)
        assert word in msg
        if code == 500:  # retried (bounded) before giving up
            assert len([r for r in api.requests if r[1].startswith(where)]) > 1


def test_api_wrong_key_and_unknown_version(k, disk, tmp_path):
    gz = k.compressed("gz")
    with balena_api.BalenaApi(releases={"raspberrypi3": ["2.50.1+rev1"]},
                              images={("raspberrypi3", "2.50.1+rev1"): gz},
                              api_key="the-right-key") as api:
        cfg = k.write_config(str(tmp_path / "c.json"), apiEndpoint=api.url)
        assert "access denied" in refused(k, disk, "-c", cfg)
        cfg = k.write_config(str(tmp_path / "c2.json"), apiEndpoint=api.url,
                             apiKey="the-right-key")
        assert "not offered" in refused(k, disk, "-c", cfg, "--version", "2.49.0")
        assert "no balenaOS release matches" in refused(k, disk, "-c", cfg, "--version", "^3")


def test_mounted_target(k, disk, tmp_path):
    """A file system of the disk is mounted (through another loop device over the same file):
    refused, whether --device names the image file or a loop device over it."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    off, size = k.old_info["p2"][0], 16 * bi.MIB
    part = subprocess.run(["losetup", "-f", "--show", "-o", str(off), "--sizelimit", str(size),
                           disk], check=True, stdout=subprocess.PIPE).stdout.decode().strip()
    try:
        subprocess.run(["mkfs.ext4", "-q", part], check=True)
        subprocess.run(["mount", part, str(mnt)], check=True)
        try:
            before = bi.file_sha(disk)
            for target in ("file", "loop"):
                if target == "file":
                    proc = bi.run_migrate("--device", disk, "--image", k.raw, "-c", k.config)
                else:
                    with bi.Loop(disk) as dev:
                        proc = bi.run_migrate("--device", dev, "--image", k.raw, "-c", k.config)
                assert proc.returncode == 2, proc.stderr[-1500:]
                assert "mounted" in proc.stderr.strip().splitlines()[-1]
                assert bi.file_sha(disk) == before
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", part])
