"""The stage-1 command line: --help everywhere, one-line errors with exit 2, root where
needed, takeover's acknowledgement, secrets never printed or logged, the Python 3.7 floor."""

import os
import subprocess
import sys

import pytest

import os_fixtures as fx
from conftest import MIGOS_PKG, REPO, migos_cmd, run_migos

COMMANDS = ["diagnostic", "backup", "init", "takeover", "restore-boot"]
TAKEOVER_OPTIONS = ["--pretend", "-d", "--download-only", "-i", "--image", "-v", "--version",
                    "-c", "--config", "--wifi", "--no-wifis", "--nwmgr-cfg", "--no-keep-name",
                    "-l", "--log-to", "--log-level", "--log-file", "--s2-log-level",
                    "--fallback-log", "-w", "--work-dir", "--check-timeout", "--no-ack",
                    "--no-cleanup", "--no-os-check", "--no-dt-check", "--change-dt-to",
                    "--backup-cfg", "--no-api-check", "--no-vpn-check", "--no-nwmgr-check",
                    "-f", "--flash-to", "--fallback-log-filename", "--fallback-log-dir"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help(cmd):
    r = run_migos(cmd, "--help")
    assert r.returncode == 0 and "usage: migos %s" % cmd in r.stdout and "--root" in r.stdout


def test_takeover_has_every_option_of_balena_takeover():
    r = run_migos("takeover", "--help")
    words = set(r.stdout.replace(",", " ").split())
    missing = [o for o in TAKEOVER_OPTIONS if o not in words]
    assert missing == []


@pytest.mark.parametrize("argv", [["init", "--bogus"], ["diagnostic", "--frobnicate"],
                                  ["takeover", "--check-timeout", "soon"],
                                  ["init", "-c", "x.json"], ["backup"]])
def test_bad_options_one_line_exit_2(argv):
    r = run_migos(*argv)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.fixture
def dev(tmp_path):
    root = fx.make_tree(str(tmp_path / "root"), "buster")
    disk = fx.make_disk_image(str(tmp_path / "disk.img"))
    cfg = fx.config_json(str(tmp_path / "config.json"))
    tar = fx_tar = __import__("migos.stage1.tarball", fromlist=["x"]).make_fake(str(tmp_path / "t"))
    return root, disk, cfg, fx_tar, tmp_path


def snapshot(root):
    out = {}
    for dp, dn, fn in os.walk(root):
        for n in fn:
            p = os.path.join(dp, n)
            with open(p, "rb") as f:
                out[p] = f.read()
    return out


@pytest.mark.parametrize("content,needle", [("{bad json", "not valid JSON"),
                                            ('{"deviceType": "raspberrypi3"}', "lacks"),
                                            ("[1, 2]", "JSON object")])
def test_bad_config_json(dev, content, needle):
    root, disk, cfg, tar, tmp = dev
    with open(cfg, "w") as f:
        f.write(content)
    before = snapshot(root)
    for cmd in ("init", "takeover"):
        r = run_migos(cmd, "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
                      "--disk", disk, *(["--no-ack"] if cmd == "takeover" else []))
        assert r.returncode == 2 and needle in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert snapshot(root) == before


def _as_nobody():
    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
@pytest.mark.parametrize("cmd", [["init", "-c", "/nonexistent.json", "-v", "2.80.3"],
                                 ["takeover", "-c", "/nonexistent.json", "--no-ack"],
                                 ["restore-boot"]])
def test_not_root(cmd):
    env = dict(os.environ, PYTHONPATH=MIGOS_PKG)
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            probe = subprocess.run([python, "-c", "import migos"], env=env, cwd="/",
                                   preexec_fn=_as_nobody, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        except OSError:
            continue
        if probe.returncode == 0:
            break
    else:
        pytest.skip("no interpreter and package readable by nobody")
    r = subprocess.run([python, "-m", "migos"] + cmd, env=env, cwd="/", preexec_fn=_as_nobody,
                       universal_newlines=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert r.returncode == 2 and "must run as root" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_takeover_asks_unless_no_ack(dev):
    root, disk, cfg, tar, tmp = dev
    before = snapshot(root)
    args = ["takeover", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
            "--disk", disk, "--no-api-check", "--no-vpn-check", "-w", str(tmp / "w")]
    r = run_migos(*args, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "--no-ack" in r.stderr
    assert snapshot(root) == before and not os.path.exists(str(tmp / "w"))
    os.makedirs(str(tmp / "w"))
    r = run_migos(*args, "--no-ack", "--log-level", "debug", "--log-file", str(tmp / "log.json"))
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(root, "boot/migos/migrate.json"))
    backups = [d for d in os.listdir(str(tmp / "w")) if d.startswith("migos-backup-")]
    assert len(backups) == 1
    # not a single secret in anything printed or logged (keyfiles and config.json carry them
    # on purpose; logs and reports never)
    logged = r.stdout + r.stderr + open(str(tmp / "log.json")).read()
    for name in ("network.json", "backup.json"):
        logged += open(os.path.join(str(tmp / "w"), backups[0], name)).read()
    logged += open(os.path.join(root, "boot/migos/migrate.json")).read()
    for s in fx.SECRETS:
        assert s not in logged, s
    assert "psk" in open(os.path.join(root, "boot/migos/system-connections/Home.nmconnection")).read()


def test_diagnostic_json_has_no_secret(dev):
    root, disk, cfg, tar, tmp = dev
    r = run_migos("diagnostic", "--root", root, "-c", cfg, "--disk", disk, "--json",
                  "--no-api-check", "--no-vpn-check", "--log-level", "debug")
    for s in fx.SECRETS:
        assert s not in r.stdout + r.stderr


def test_vermin_python_3_7_floor():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin is not installed")
    pkg = os.path.join(REPO, "packages/migos/migos")
    r = subprocess.run([vermin, "-t=3.7-", "--no-tips", "--violations",
                        os.path.join(pkg, "stage1"), os.path.join(pkg, "boards.py")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert r.returncode == 0 and "incompatible versions" not in r.stdout.lower().replace(
        "incompatible versions:     2.x", ""), r.stdout


def _python37():
    import glob
    import shutil
    for cand in [shutil.which("python3.7")] + sorted(glob.glob("/root/.pyenv/versions/3.7*/bin/python3.7")):
        if cand and subprocess.run([cand, "-c", "import sys; assert sys.version_info[:2] == (3, 7)"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE).returncode == 0:
            return cand
    return None


def test_runs_on_python_3_7(dev):
    """Not only vermin's opinion: the whole init/restore-boot round trip under Python 3.7."""
    py37 = _python37()
    if py37 is None:
        pytest.skip("no Python 3.7 interpreter")
    root, disk, cfg, tar, tmp = dev
    before = snapshot(root)
    env = dict(os.environ, PYTHONPATH=MIGOS_PKG)
    base = [py37, "-m", "migos"]
    for argv in (["diagnostic", "--root", root, "-c", cfg, "--disk", disk, "--no-api-check",
                  "--no-vpn-check"],
                 ["backup", "--root", root, "--out", str(tmp / "bk")],
                 ["init", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
                  "--disk", disk, "--no-api-check", "--no-vpn-check"],
                 ["restore-boot", "--root", root]):
        r = subprocess.run(base + argv + ["--log-level", "error"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True)
        assert r.returncode == 0, (argv[0], r.stderr)
    assert snapshot(root) == before


def test_runs_as_a_zipapp_and_finds_the_tarball_next_to_it(dev):
    """python3 migos.pyz ...: the one-file form; the boot tarball next to it is found."""
    import shutil
    import zipapp
    root, disk, cfg, tar, tmp = dev
    app = tmp / "app"
    shutil.copytree(os.path.join(MIGOS_PKG, "migos"), str(app / "migos"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp / "dist"
    os.makedirs(str(dist))
    pyz = str(dist / "migos.pyz")
    zipapp.create_archive(str(app), pyz, main="migos.cli:main")
    shutil.copy(tar, str(dist))
    shutil.copy(os.path.join(os.path.dirname(tar), "SHA256SUMS"), str(dist))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, pyz, "init", "--root", root, "-c", cfg, "-v", "2.80.3",
                        "--disk", disk, "--no-api-check", "--no-vpn-check", "--pretend",
                        "--log-level", "error"], env=env, cwd=str(tmp),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert r.returncode == 0, r.stderr
    assert "would switch config.txt" in r.stdout
