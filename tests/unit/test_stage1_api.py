"""The balena API as stage 1 uses it, against a local fake on 127.0.0.1: /ping, the VPN
port, version resolution with ranges, and the image download with Range resume
(takeover -d)."""

import gzip
import hashlib
import http.server
import json
import os
import socket
import threading
import urllib.parse

import pytest

import os_fixtures as fx
from conftest import run_migos
from migos.stage1 import api

VERSIONS = ["6.0.10+rev2", "5.1.20+rev1", "5.1.20", "2.115.18+rev1", "2.80.3+rev1", "2.80.9",
            "2.81.0", "2.9.1"]


class FakeBalena(http.server.BaseHTTPRequestHandler):
    image = gzip.compress(os.urandom(300000))
    drops = 0            # how many times to cut the image stream half-way
    seen = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        FakeBalena.seen.append(("GET", self.path, dict(self.headers)))
        if self.path == "/ping":
            body = b"OK"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/v6/release?"):
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            assert q["$select"] == ["raw_version"]
            assert "is_final eq true" in q["$filter"][0]
            assert "iodt/slug eq 'raspberrypi3'" in q["$filter"][0]
            if self.headers.get("Authorization") != "Bearer DEVKEY-fedcba9876543210":
                self.send_error(401)
                return
            body = json.dumps({"d": [{"raw_version": v} for v in VERSIONS]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        req = json.loads(self.rfile.read(n))
        FakeBalena.seen.append(("POST", self.path, dict(self.headers), req))
        if self.path != "/download" or self.headers.get("Authorization", "")[:7] != "Bearer ":
            self.send_error(404)
            return
        data = FakeBalena.image
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if FakeBalena.drops > 0:
            FakeBalena.drops -= 1
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeBalena)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    FakeBalena.seen = []
    FakeBalena.drops = 0
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_ping_and_vpn(server):
    assert api.ping(server, 2)[0] is True
    ok, msg = api.ping(server + "/nothing", 2)
    assert not ok and "404" in msg
    port = int(server.rsplit(":", 1)[1])
    assert api.vpn_reachable("127.0.0.1", port, 2)[0] is True


@pytest.mark.parametrize("spec,want", [(None, "6.0.10+rev2"), ("^5.1", "5.1.20+rev1"),
                                       ("~2.80", "2.80.9"), ("~2.80.3", "2.80.9"),
                                       ("2.80.3+rev1", "2.80.3+rev1"), ("^2.80", "2.115.18+rev1"),
                                       ("5.1.20", "5.1.20+rev1")])
def test_resolve_version(server, spec, want):
    assert api.resolve_version(server, "DEVKEY-fedcba9876543210", "raspberrypi3", spec) == want


def test_resolve_version_nothing_matches(server):
    with pytest.raises(api.ApiError) as e:
        api.resolve_version(server, "DEVKEY-fedcba9876543210", "raspberrypi3", "^7")
    assert "no balenaOS release" in str(e.value)
    with pytest.raises(api.ApiError) as e:
        api.resolve_version(server, "wrong-key", "raspberrypi3", None)
    assert "HTTP 401" in str(e.value)


def test_takeover_download_only_resumes(server, tmp_path):
    cfg = fx.config_json(str(tmp_path / "config.json"), api=server)
    FakeBalena.drops = 2
    r = run_migos("takeover", "-c", cfg, "-d", "-v", "^2.80", "-w", str(tmp_path / "w"),
                  "--root", str(tmp_path / "nowhere"), "--log-file", str(tmp_path / "log"))
    assert r.returncode == 0, r.stderr
    dest = tmp_path / "w" / "balena-cloud-raspberrypi3-2.115.18+rev1.img.gz"
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(FakeBalena.image).digest()
    posts = [s for s in FakeBalena.seen if s[0] == "POST"]
    assert len(posts) == 3
    assert posts[0][3] == {"deviceType": "raspberrypi3", "version": "2.115.18+rev1",
                           "fileType": ".gz"}
    assert "Range" not in posts[0][2] and posts[1][2]["Range"].startswith("bytes=")
    # no secret in anything printed or logged
    text = r.stdout + r.stderr + (tmp_path / "log").read_text()
    for s in fx.SECRETS:
        assert s not in text


def test_download_only_pretend_writes_nothing(server, tmp_path):
    cfg = fx.config_json(str(tmp_path / "config.json"), api=server)
    r = run_migos("takeover", "-c", cfg, "-d", "--pretend", "-w", str(tmp_path / "w"))
    assert r.returncode == 0 and "would download balenaOS 6.0.10+rev2" in r.stdout
    assert not (tmp_path / "w").exists()


def test_api_check_passes_against_a_live_endpoint(server, tmp_path):
    root = fx.make_tree(str(tmp_path / "root"), "buster")
    disk = fx.make_disk_image(str(tmp_path / "disk.img"))
    port = int(server.rsplit(":", 1)[1])
    cfg = fx.config_json(str(tmp_path / "config.json"), api=server, vpnPort=port)
    r = run_migos("diagnostic", "--root", root, "-c", cfg, "--disk", disk, "--json",
                  "--check-timeout", "3", "--log-level", "error")
    data = json.loads(r.stdout)
    st = {c["check"]: c["status"] for c in data["checks"]}
    assert st["api"] == "ok" and st["vpn"] == "ok" and r.returncode == 0


def test_init_with_migos_url_checks_sha256sums(tmp_path):
    import functools
    from migos.stage1 import tarball
    pub = tmp_path / "pub"
    tar = tarball.make_fake(str(pub))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(pub))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/%s" % (srv.server_address[1], os.path.basename(tar))
        root = fx.make_tree(str(tmp_path / "root"), "buster")
        disk = fx.make_disk_image(str(tmp_path / "disk.img"))
        cfg = fx.config_json(str(tmp_path / "config.json"))
        args = ["init", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-url", url, "--disk",
                disk, "--no-api-check", "--no-vpn-check", "-w", str(tmp_path / "w"),
                "--log-level", "error"]
        r = run_migos(*args)
        assert r.returncode == 0, r.stderr
        assert os.path.isfile(os.path.join(root, "boot/migos.itb"))
        assert run_migos("restore-boot", "--root", root).returncode == 0
        with open(os.path.join(str(pub), "SHA256SUMS"), "w") as f:
            f.write("0" * 64 + "  " + os.path.basename(tar) + "\n")
        r = run_migos(*args)
        assert r.returncode == 2 and "does not match its SHA256SUMS" in r.stderr
        assert not os.path.exists(os.path.join(root, "boot/migos.itb"))
    finally:
        srv.shutdown()
        srv.server_close()


def test_full_takeover_against_the_fake_api(server, tmp_path):
    """Every check on (API /ping and VPN against 127.0.0.1), the latest release resolved,
    backup in the work dir, MIGOS installed; no reboot because --root is a fixture tree."""
    from migos.stage1 import tarball
    root = fx.make_tree(str(tmp_path / "root"), "buster")
    disk = fx.make_disk_image(str(tmp_path / "disk.img"))
    port = int(server.rsplit(":", 1)[1])
    cfg = fx.config_json(str(tmp_path / "config.json"), api=server, vpnPort=port)
    tar = tarball.make_fake(str(tmp_path / "t"))
    r = run_migos("takeover", "--root", root, "-c", cfg, "--migos-tarball", tar, "--disk", disk,
                  "--no-ack", "-w", str(tmp_path / "w"), "--check-timeout", "5", "--json",
                  "--log-file", str(tmp_path / "log"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["image"] == {"source": "api", "version": "6.0.10+rev2", "requested": "latest",
                            "device_type": "raspberrypi3"}
    settings = json.load(open(os.path.join(root, "boot/migos/migrate.json")))
    assert settings["image"]["version"] == "6.0.10+rev2" and settings["checks_disabled"] == []
    text = r.stdout + r.stderr + (tmp_path / "log").read_text()
    for s in fx.SECRETS:
        assert s not in text
