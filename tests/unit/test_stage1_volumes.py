"""--backup-cfg: takeover's YAML format, read with a small parser, packed into a tar.gz."""

import io
import os
import tarfile

import pytest

import os_fixtures as fx
from conftest import run_migos
from migos.errors import UsageError
from migos.stage1 import volumes

YAML = '''# volumes to carry over
- volume: "app data"
  items:
    - source: /home/pi/app/data
      target: "data dir"
      filter: '^keep-'
    - source: /etc/app.conf
- volume: logs
  items:
  - source: "/var/log/app"
'''


def test_parse():
    v = volumes.parse(YAML)
    assert [x["volume"] for x in v] == ["app data", "logs"]
    assert v[0]["items"] == [{"source": "/home/pi/app/data", "target": "data dir",
                              "filter": "^keep-"}, {"source": "/etc/app.conf"}]
    assert v[1]["items"] == [{"source": "/var/log/app"}]


@pytest.mark.parametrize("bad", ["- volume: x\n  items:\n    - target: y\n",
                                 "- volume: x\n  colour: red\n", "source: /x\n",
                                 "- volume: x\n  items:\n    - source: /a\n      filter: '('\n"])
def test_bad_yaml(bad):
    with pytest.raises(UsageError):
        volumes.parse(bad)


def test_archive_and_init(tmp_path):
    root = fx.make_tree(str(tmp_path / "root"), "buster")
    for rel in ("home/pi/app/data/keep-1", "home/pi/app/data/drop-2", "etc/app.conf",
                "var/log/app/a.log"):
        fx._w(root, rel, rel)
    cfg_yaml = str(tmp_path / "backup.yml")
    with open(cfg_yaml, "w") as f:
        f.write(YAML)
    data = volumes.make_archive(cfg_yaml, root)
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert sorted(t.getnames()) == ["app data/app.conf", "app data/data dir/keep-1",
                                        "logs/app/a.log"]
    disk = fx.make_disk_image(str(tmp_path / "disk.img"))
    cfg = fx.config_json(str(tmp_path / "config.json"))
    from migos.stage1 import tarball
    tar = tarball.make_fake(str(tmp_path / "t"))
    r = run_migos("init", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
                  "--disk", disk, "--no-api-check", "--no-vpn-check", "--backup-cfg", cfg_yaml,
                  "--log-level", "error")
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(os.path.join(root, "boot/migos/backup.tgz")) > 0
