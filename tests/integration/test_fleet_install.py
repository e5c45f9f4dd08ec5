"""``migos agent --install`` for real: into a --root tree, the unit checked by
``systemd-analyze verify``, and the unit's own ExecStart run (in a private mount namespace
where the tree's /etc/migos and /usr/local/lib/migos overlay the host's) against mosquitto on
127.0.0.1: a signed ``status`` is answered, a command signed with another key is refused.
Every refusal of --install leaves nothing written."""

import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys

import pytest

from migos.fleet import install, signing, topics
from tests.conftest import run_migos
from tests.mqtt_broker import broker  # noqa: F401  (fixture)
from tests.integration.test_fleet_agent import Listener

FLEET = "instfleet"
DEVICE = "pi-0042"
KEY = os.urandom(32).hex()
CFG = {"fleet": "f1", "broker": {"host": "mqtt.example", "port": 8883}}

def _write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return str(path)

@pytest.fixture
def pyz(tmp_path):
    from stages import dist, vendor
    if not vendor.files():
        pytest.skip("paho-mqtt not installed in this interpreter")
    path = str(tmp_path / "migos.pyz")
    dist.write_pyz(path, 1_700_000_000)
    return path

def exec_start(root):
    with open(os.path.join(root, install.UNIT.lstrip("/"))) as f:
        for line in f:
            if line.startswith("ExecStart="):
                return shlex.split(line[len("ExecStart="):])
    raise AssertionError("no ExecStart in the unit")

def in_installed_tree(root, argv):
    """argv run with ROOT's /etc and /usr/local/lib laid over the host's (read-only overlays in
    a private mount namespace): the paths in the unit and agent.json are the real ones."""
    script = ("mount -t overlay overlay -o lowerdir=%s/etc:/etc /etc && "
              "mount -t overlay overlay -o lowerdir=%s/usr/local/lib:/usr/local/lib /usr/local/lib "
              "&& exec \"$@\"" % (root, root))
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"] + argv

def test_installed_unit_verifies_and_its_agent_answers(tmp_path, broker, pyz, needs_root):  # noqa: F811
    fleet_key = bytes.fromhex(signing.new_fleet_key())
    key = _write(tmp_path / "dev.key", signing.device_key(fleet_key, DEVICE).hex() + "\n")
    cfg = _write(tmp_path / "agent.json", json.dumps({
        "fleet": FLEET, "broker": {"host": "127.0.0.1", "port": broker.port},
        "state_dir": str(tmp_path / "state"), "log_mqtt": False}), 0o644)
    root = str(tmp_path / "root")
    r = run_migos("agent", "--install", "--config", cfg, "--key-file", key, "--pyz", pyz,
                  "--device", DEVICE, "--root", root)
    assert r.returncode == 0, r.stderr
    unit = os.path.join(root, install.UNIT.lstrip("/"))
    assert os.path.islink(os.path.join(root, install.WANTS.lstrip("/")))
    for p, mode in ((install.KEY, 0o600), (install.CONFIG, 0o600), (install.PYZ, 0o755)):
        assert stat.S_IMODE(os.stat(os.path.join(root, p.lstrip("/"))).st_mode) == mode, p

    analyze = shutil.which("systemd-analyze")
    if analyze:       # offline: the unit alone, no systemd running needed
        d = tmp_path / "verify"
        d.mkdir()
        shutil.copy(unit, str(d / install.UNIT_NAME))
        v = subprocess.run([analyze, "verify", str(d / install.UNIT_NAME)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        assert v.returncode == 0 and install.UNIT_NAME not in v.stdout, v.stdout
        here = install.systemd_version_of("/")
        if here is not None and here < install.RESTART_STEPS_SYSTEMD:
            # the version gate matters: this systemd does not know RestartSteps
            (d / install.UNIT_NAME).write_text(install.unit_text(install.RESTART_STEPS_SYSTEMD))
            v = subprocess.run([analyze, "verify", str(d / install.UNIT_NAME)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True)
            assert "RestartSteps" in v.stdout, v.stdout

    argv = exec_start(root)
    assert argv[1:] == [install.PYZ, "agent", "--config", install.CONFIG]
    listen = Listener(broker.port, topics.topic(FLEET, DEVICE, "status"))
    log = open(str(tmp_path / "agent.log"), "w")
    proc = subprocess.Popen(in_installed_tree(root, argv), stdout=log, stderr=subprocess.STDOUT)
    try:
        cmd_topic = topics.topic(FLEET, DEVICE, "cmd")
        # the agent may not have subscribed yet: resend fresh commands until one is answered
        got = None
        for _ in range(30):
            assert proc.poll() is None, open(log.name).read()[-2000:]
            env = signing.make_command(fleet_key, DEVICE, "status")
            listen.publish(cmd_topic, env)
            try:
                got = listen.wait_for(lambda m: m.get("id") == env["id"], timeout=1)
                break
            except AssertionError:
                continue
        assert got is not None, open(log.name).read()[-2000:]
        assert got["type"] == "result" and got["ok"] and got["status"]["allow"] == list(
            install.DEFAULT_ALLOW)
        wrong = signing.make_command(bytes.fromhex(signing.new_fleet_key()), DEVICE, "status")
        listen.publish(cmd_topic, wrong)
        refused = listen.wait_for(lambda m: m.get("id") == wrong["id"], timeout=10)
        assert refused["type"] == "refused" and refused["reason"] == "bad-signature"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        listen.conn.stop()
        log.close()
    assert rc == 0, "SIGTERM (systemctl stop) must end the agent cleanly"

    # a configuration error exits 2, which the unit does not restart (RestartPreventExitStatus)
    os.unlink(os.path.join(root, install.KEY.lstrip("/")))
    bad = subprocess.run(in_installed_tree(root, argv), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    assert bad.returncode == 2 and "agent.key" in bad.stdout, bad.stdout
    assert "RestartPreventExitStatus=2" in open(unit).read().splitlines()

def test_install_refusals_write_nothing_and_uninstall_erases(tmp_path):
    cfg = _write(tmp_path / "a.json", json.dumps(CFG), 0o644)
    key = _write(tmp_path / "k", KEY + "\n")
    pyz = _write(tmp_path / "m.pyz", "pyz", 0o644)
    root = tmp_path / "root"
    base = ("agent", "--install", "--config", cfg, "--pyz", pyz, "--root", str(root))
    r = run_migos(*base, "--key-file", key, "--pretend")
    assert r.returncode == 0 and "would write /etc/migos/agent.key" in r.stdout, r.stderr
    assert not root.exists(), "--pretend wrote something"
    refusals = [
        (("--key-file", _write(tmp_path / "k2", KEY, 0o644)), "accessible to others"),
        (("--key-file", _write(tmp_path / "k3", "")), "empty"),
        (("--key-file", _write(tmp_path / "k4", "ab" * 8)), "shorter than 16"),
        (("--key-file", str(tmp_path / "nokey")), "cannot read the key file"),
        (("--key-file", key, "--password-file", _write(tmp_path / "pw", "x", 0o666)),
         "accessible to others"),
    ]
    for extra, msg in refusals:
        r = run_migos(*base, *extra)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        assert not root.exists(), "a refused install wrote something"
    for bad in ("{", "[]", json.dumps({"broker": {}})):
        r = run_migos("agent", "--install", "--config", _write(tmp_path / "bad.json", bad),
                      "--key-file", key, "--pyz", pyz, "--root", str(root))
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert not root.exists()
    r = run_migos(*base)
    assert r.returncode == 2 and "needs --key-file" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run_migos("agent", "--install", "--config",
                  _write(tmp_path / "pwcfg.json", json.dumps(dict(CFG, password_file="/x"))),
                  "--key-file", key, "--pyz", pyz, "--root", str(root))
    assert r.returncode == 2 and "--password-file" in r.stderr, r.stderr
    assert not root.exists()
    r = run_migos("agent", "--install", "--config", str(tmp_path / "none.json"),
                  "--key-file", key, "--pyz", pyz, "--root", str(root))
    assert r.returncode == 2 and "cannot read agent configuration" in r.stderr
    r = run_migos(*base, "--key-file", "-", input=KEY + "\n")
    assert r.returncode == 0, r.stderr
    assert (root / "etc/migos/agent.key").read_text() == KEY + "\n"
    assert stat.S_IMODE(os.stat(root / "etc/migos/agent.key").st_mode) == 0o600
    assert os.readlink(root / "etc/systemd/system/multi-user.target.wants/migos-agent.service") \
        == "../migos-agent.service"
    r = run_migos("agent", "--uninstall", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert not (root / "etc/migos/agent.key").exists()
    assert not (root / "etc/systemd/system/migos-agent.service").exists()

