"""migrate end to end on loop devices: every source and every format (root)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import balena_api  # noqa: E402
import balena_image as bi  # noqa: E402

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices)")]


@pytest.fixture(scope="module")
def k(tmp_path_factory):
    return bi.kit(tmp_path_factory.mktemp("migrate-src"))


def nm_args(k):
    out = []
    for p in k.nm:
        out += ["--nwmgr-cfg", p]
    return out


def assert_done(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(l) for l in proc.stderr.splitlines() if l.startswith("{")]
    assert events[-1]["state"] == "SUCCESS"
    text = proc.stderr + proc.stdout
    assert bi.CONFIG["apiKey"] not in text
    assert "wifi-passphrase-SECRET" not in text
    return events


@pytest.mark.parametrize("fmt", ["raw", "gz", "xz", "zst", "zip"])
def test_file_source_each_format(k, fmt):
    src = k.compressed(fmt)
    disk = k.fresh_disk("disk-%s.img" % fmt)
    with bi.Loop(disk) as dev:
        proc = bi.run_migrate("--device", dev, "--image", src, "-c", k.config,
                              "--hostname", "balena-%s" % fmt, *nm_args(k))
    events = assert_done(proc)
    assert any(e.get("format") == {"gz": "gzip", "zst": "zstd"}.get(fmt, fmt) for e in events)
    assert bi.verify_migrated(disk, k, hostname="balena-%s" % fmt, nm=bi.NM_FILES) == []
    # progress lines carry bytes, rate and ETA
    prog = [e for e in events if e.get("progress") == "write"]
    assert prog and all("mbps" in e and "eta_s" in e and "bytes" in e for e in prog)
    # every state change is logged with INI
    inis = [e["state_name"] for e in events if e["state"] == "INI" and "state_name" in e]
    assert inis[:3] == ["PREFLIGHT", "PLAN", "WRITE"] and inis[-3:] == ["CHECK", "SWITCH", "DONE"]
    os.unlink(disk)


def test_second_run_after_success_is_a_no_op(k):
    disk = k.fresh_disk("disk-twice.img")
    with bi.Loop(disk) as dev:
        assert_done(bi.run_migrate("--device", dev, "--image", k.raw, "-c", k.config))
        before = bi.file_sha(disk)
        proc = bi.run_migrate("--device", dev, "--image", k.raw, "-c", k.config)
        assert_done(proc)
        assert "already boots balenaOS" in proc.stderr
    assert bi.file_sha(disk) == before
    os.unlink(disk)


def test_image_file_as_device_and_p1_at_1mib(k, tmp_path):
    # the disk is a plain image file (no loop device), old p1 at 1 MiB, 256 MiB long
    old = bi.make_old_os_disk(str(tmp_path / "old1.img"), 384, 1, 256,
                              p1_files={"config.json": json.dumps(bi.CONFIG).encode()})
    disk = k.fresh_disk("disk-1mib.img", template=old["path"])
    # no -c: config.json comes from the old boot partition
    proc = bi.run_migrate("--device", disk, "--image", k.compressed("gz"))
    assert_done(proc)
    assert bi.verify_migrated(disk, k, old_info=old) == []
    parts = bi.partitions(disk)
    assert parts[0][1] == 264 * bi.MIB  # journal at 260 MiB, resin-boot 4 MiB later
    os.unlink(disk)


def test_http_url_source(k):
    gz = k.compressed("gz")
    with balena_api.BalenaApi(files={"balena.img.gz": gz}) as api:
        disk = k.fresh_disk("disk-http.img")
        with bi.Loop(disk) as dev:
            proc = bi.run_migrate("--device", dev, "--image", api.url + "/files/balena.img.gz",
                                  "-c", k.config, *nm_args(k))
        assert_done(proc)
        assert api.total_sent() == os.path.getsize(gz)
    assert bi.verify_migrated(disk, k, nm=bi.NM_FILES) == []
    os.unlink(disk)


def test_balena_api_source_with_version_range(k, tmp_path):
    gz = k.compressed("gz")
    key = "device-api-key-SECRET-abcdef"
    with balena_api.BalenaApi(
            releases={"raspberrypi3": ["2.48.0+rev3", "2.50.1+rev1", "2.51.0+rev2", "3.0.0"]},
            images={("raspberrypi3", "2.50.1+rev1"): gz},
            api_key=key) as api:
        cfg = k.write_config(str(tmp_path / "config.json"), apiEndpoint=api.url,
                             deviceApiKey=key)
        disk = k.fresh_disk("disk-api.img")
        with bi.Loop(disk) as dev:
            proc = bi.run_migrate("--device", dev, "--version", "~2.50", "-c", cfg)
        assert_done(proc)
        assert key not in proc.stderr
        posts = [r for r in api.requests if r[0] == "POST"]
        assert len(posts) == 1 and posts[0][3] == "Bearer " + key
        gets = [r for r in api.requests if r[1].startswith("/v6/release")]
        assert gets and "raw_version" in gets[0][1]
        config = dict(bi.CONFIG, apiEndpoint=api.url, deviceApiKey=key)
    assert bi.verify_migrated(disk, k, config=config) == []
    os.unlink(disk)


def test_balena_api_default_latest(k, tmp_path):
    gz = k.compressed("gz")
    with balena_api.BalenaApi(releases={"raspberrypi3": ["2.50.1+rev1", "2.51.0+rev2"]},
                              images={("raspberrypi3", "2.51.0+rev2"): gz}) as api:
        cfg = k.write_config(str(tmp_path / "c.json"), apiEndpoint=api.url)
        disk = k.fresh_disk("disk-api-latest.img")
        proc = bi.run_migrate("--device", disk, "-c", cfg)
        assert_done(proc)
        assert any("2.51.0+rev2" in e for e in proc.stderr.splitlines() if "resolved" in e)
    os.unlink(disk)
