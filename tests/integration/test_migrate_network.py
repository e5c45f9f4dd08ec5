"""A server that drops the connection every few MiB: migrate resumes with Range (root)."""

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
    return bi.kit(tmp_path_factory.mktemp("migrate-net"))


@pytest.mark.parametrize("source", ["url", "api"])
def test_drops_every_few_mib(k, tmp_path, source):
    gz = k.compressed("gz")
    size = os.path.getsize(gz)
    drop = 3 * bi.MIB
    assert size > 4 * drop, "image too small for the test to mean anything"
    with balena_api.BalenaApi(files={"img.gz": gz}, drop_every=drop,
                              releases={"raspberrypi3": ["2.50.1+rev1"]},
                              images={("raspberrypi3", "2.50.1+rev1"): gz}) as api:
        disk = k.fresh_disk("disk-net-%s.img" % source)
        if source == "url":
            args = ["--image", api.url + "/files/img.gz", "-c", k.config]
            path = "/files/img.gz"
        else:
            cfg = k.write_config(str(tmp_path / "c.json"), apiEndpoint=api.url)
            args = ["-c", cfg, "--version", "2.50.1+rev1"]
            path = "/download"
        with bi.Loop(disk) as dev:
            proc = bi.run_migrate("--device", dev, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        sent = api.total_sent(path)
        ranges = [r[2] for r in api.requests if r[1].startswith(path)]
    # it really was cut and resumed, each time at the byte where it stopped
    assert len(ranges) >= size // drop
    offsets = [int(r.split("=")[1].rstrip("-")) for r in ranges if r]
    assert offsets == [drop * (i + 1) for i in range(len(offsets))]
    assert sent < 1.10 * size, (sent, size)      # staged in RAM: downloaded once, verified there
    assert '"staged": true' in proc.stderr
    drops = [json.loads(l) for l in proc.stderr.splitlines() if "connection dropped" in l]
    assert len(drops) == len(offsets)
    assert bi.verify_migrated(disk, k, config=None if source == "url" else
                              dict(bi.CONFIG, apiEndpoint=api.url)) == []
    os.unlink(disk)


def test_image_larger_than_the_ram_budget_is_streamed(k, tmp_path):
    """Over the RAM budget the image is not staged: one download to verify it, a second one to
    write it (both resumable), and the migration completes."""
    gz = k.compressed("gz")
    size = os.path.getsize(gz)
    with balena_api.BalenaApi(files={"img.gz": gz}, drop_every=4 * bi.MIB) as api:
        disk = k.fresh_disk("disk-budget.img")
        with bi.Loop(disk) as dev:
            proc = bi.run_migrate("--device", dev, "--image", api.url + "/files/img.gz",
                                  "-c", k.config, env=bi.migrate_env(MIGOS_RAM_BUDGET_MIB="1"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        sent = api.total_sent("/files/img.gz")
    assert '"staged": false' in proc.stderr and "does not fit" in proc.stderr
    assert 1.9 * size < sent < 2.2 * size, (sent, size)
    assert bi.verify_migrated(disk, k) == []
    os.unlink(disk)


def test_server_ignoring_range_still_completes(k, monkeypatch):
    # a server without Range support answers 200: migrate re-reads and skips (slower, correct)
    gz = k.compressed("gz")
    with balena_api.BalenaApi(files={"img.gz": gz}, drop_every=8 * bi.MIB) as api:
        orig = balena_api._Handler._serve

        def serve(self, path, fpath):
            if "Range" in self.headers:
                del self.headers["Range"]
            return orig(self, path, fpath)
        monkeypatch.setattr(balena_api._Handler, "_serve", serve)
        disk = k.fresh_disk("disk-norange.img")
        with bi.Loop(disk) as dev:
            proc = bi.run_migrate("--device", dev, "--image", api.url + "/files/img.gz",
                                  "-c", k.config)
        # with drops every 8 MiB and restarts from 0 it can never get past 8 MiB: it must give
        # up with a clear error rather than loop forever
        if os.path.getsize(gz) > 8 * bi.MIB:
            assert proc.returncode != 0
            assert "connection" in proc.stderr.splitlines()[-1]
        else:
            assert proc.returncode == 0
    os.unlink(disk)
