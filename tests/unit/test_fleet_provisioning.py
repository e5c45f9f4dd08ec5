"""Provisioning the fleet agent: the install plan (``migos.fleet.install``), the agent's
allow-list and clock floor, and what ``migos init`` carries into MIGOS
(``migos.stage1.agentcarry``). Pure code: nothing here needs root or a broker."""

import json
import os
import stat
import sys
import time

import pytest

from migos.errors import UsageError
from migos.fleet import install, signing
from migos.fleet.agent import Agent, check_config, clock

KEY = os.urandom(32).hex()
CFG = {"fleet": "f1", "broker": {"host": "mqtt.example", "port": 8883, "tls_ca": "/etc/ca.pem"}}


def files_of(plan):
    return {f.path: f for f in plan.files}


def test_install_plan_files_modes_and_commands():
    plan = install.plan_install(CFG, install.check_key(KEY, "k"), "/x/migos.pyz",
                                password_text="pw\n", device="dev-1", systemd_version=252)
    f = files_of(plan)
    assert set(f) == {install.PYZ, install.CONFIG, install.KEY, install.PASSWORD, install.UNIT}
    assert f[install.PYZ].source == "/x/migos.pyz" and f[install.PYZ].mode == 0o755
    for secret in (install.CONFIG, install.KEY, install.PASSWORD):
        assert f[secret].mode == 0o600
    assert f[install.KEY].secret and f[install.PASSWORD].secret and not f[install.CONFIG].secret
    assert f[install.KEY].data == (KEY + "\n").encode()
    cfg = json.loads(f[install.CONFIG].data)
    assert cfg["key_file"] == install.KEY and cfg["password_file"] == install.PASSWORD
    assert cfg["device"] == "dev-1" and cfg["broker"] == CFG["broker"]
    assert cfg["allow"] == ["diagnostic", "backup", "init", "takeover", "restore-boot", "status"]
    assert KEY not in f[install.CONFIG].data.decode(), "the key must not be inside agent.json"
    assert plan.commands == [["systemctl", "daemon-reload"],
                             ["systemctl", "enable", "--now", "migos-agent.service"]]
    assert plan.links == []


def test_install_plan_offline_only_links():
    plan = install.plan_install(CFG, install.check_key(KEY, "k"), "/p", offline=True)
    assert plan.commands == []
    assert plan.links == [(install.WANTS, "../migos-agent.service")]
    assert install.PASSWORD not in files_of(plan)
    assert "device" not in json.loads(files_of(plan)[install.CONFIG].data), \
        "an image's agent.json must not carry the build host's id"


def test_install_keeps_a_given_allow_list_and_refuses_unknown_commands():
    plan = install.plan_install(dict(CFG, allow=["status", "diagnostic"]),
                                install.check_key(KEY, "k"), "/p")
    assert json.loads(files_of(plan)[install.CONFIG].data)["allow"] == ["status", "diagnostic"]
    with pytest.raises(UsageError, match="'allow' names rm-rf"):
        install.plan_install(dict(CFG, allow=["status", "rm-rf"]), install.check_key(KEY, "k"), "/p")


@pytest.mark.parametrize("cfg,msg", [
    ({"broker": {}}, "lacks 'fleet'"),
    ({"fleet": "a/b"}, "fleet"),
    ({"fleet": "f", "broker": {"port": "x"}}, "'port'"),
    ({"fleet": "f", "broker": {"port": 70000}}, "'port'"),
    ({"fleet": "f", "broker": []}, "'broker' is not an object"),
    ({"fleet": "f", "clock_floor": "soon"}, "clock_floor"),
])
def test_install_refuses_bad_configurations(cfg, msg):
    with pytest.raises(UsageError, match=msg):
        install.plan_install(cfg, install.check_key(KEY, "k"), "/p")


@pytest.mark.parametrize("text,msg", [("", "empty"), ("  \n", "empty"), ("zz" * 32, "not hex"),
                                      ("abc", "not hex"), ("ab" * 15, "15 bytes, shorter")])
def test_key_checks(text, msg):
    with pytest.raises(UsageError, match=msg):
        install.check_key(text, "KEYSRC")
    assert install.check_key(" " + KEY.upper() + "\n", "k") == KEY + "\n"


def test_secret_mode_check():
    install.check_secret_mode(stat.S_IFREG | 0o600, "k")
    install.check_secret_mode(stat.S_IFREG | 0o400, "k")
    for mode in (0o640, 0o604, 0o660, 0o602):
        with pytest.raises(UsageError, match="accessible to others"):
            install.check_secret_mode(stat.S_IFREG | mode, "k")


def test_unit_restart_policy_follows_the_systemd_version():
    old, new = install.unit_text(252), install.unit_text(254)
    for text in (old, new):
        lines = text.splitlines()
        for want in ("Restart=always", "RestartSec=10", "StartLimitIntervalSec=0",
                     "RestartPreventExitStatus=2", "WantedBy=multi-user.target",
                     "ExecStart=/usr/bin/python3 /usr/local/lib/migos/migos.pyz agent --config "
                     "/etc/migos/agent.json"):
            assert want in lines, want
        # init/takeover write the boot partition and disks and reboot: none of these
        for never in ("ProtectSystem", "PrivateDevices", "ProtectClock", "ReadOnlyPaths",
                      "ProtectKernelTunables", "DevicePolicy"):
            assert never not in text
        assert "NoNewPrivileges=yes" in lines and "StartLimitIntervalSec=0" in \
            text.split("[Service]")[0], "StartLimitIntervalSec belongs in [Unit]"
    assert "RestartSteps" not in old and "RestartMaxDelaySec" not in old
    assert "RestartSteps=5" in new and "RestartMaxDelaySec=300" in new
    assert "RestartSteps" not in install.unit_text(None)


def test_uninstall_plan():
    present = {install.UNIT, install.KEY, install.CONFIG, install.PYZ, install.WANTS}
    plan = install.plan_uninstall(present)
    assert plan.commands[0] == ["systemctl", "disable", "--now", "migos-agent.service"]
    assert set(plan.remove) == present
    assert install.plan_uninstall(present, offline=True).commands == []


def test_systemd_version_of_a_tree(tmp_path):
    assert install.systemd_version_of(str(tmp_path)) is None
    d = tmp_path / "usr/lib/systemd"
    d.mkdir(parents=True)
    (d / "libsystemd-shared-254.so").write_bytes(b"")
    assert install.systemd_version_of(str(tmp_path)) == 254


# --- the agent: allow-list and clock floor -------------------------------------------------------

def _agent(tmp_path, **cfg):
    c = dict({"fleet": "f", "device": "d1", "state_dir": str(tmp_path), "broker": {"port": 1},
              "key_file": "-"}, **cfg)
    calls = []

    def runner(cmd, args, progress):
        calls.append(cmd)
        return 0
    return Agent(check_config(c), signing.device_key(FLEET_KEY, "d1"), runner=runner,
                 ship_logs=False), calls


FLEET_KEY = bytes.fromhex(signing.new_fleet_key())


def test_allow_list_refuses_other_commands_as_not_allowed_here(tmp_path):
    agent, calls = _agent(tmp_path, allow=["status"])
    try:
        cmd = signing.make_command(FLEET_KEY, "d1", "diagnostic")
        assert agent.handle(json.dumps(cmd)) == "refused"
        assert agent.refused[-1][0] == "not-allowed-here" and calls == []
        assert agent.handle(json.dumps(signing.make_command(FLEET_KEY, "d1", "status"))) == "status"
        # an unknown command stays unknown, whatever the allow-list
        assert agent.handle(json.dumps(signing.make_command(FLEET_KEY, "d1", "reboot"))) == "refused"
        assert agent.refused[-1][0] == "unknown-command"
    finally:
        agent.conn.stop()


def test_default_allow_list_runs_diagnostic(tmp_path):
    agent, calls = _agent(tmp_path)
    try:
        assert agent.handle(json.dumps(signing.make_command(FLEET_KEY, "d1", "diagnostic"))) \
            == "started"
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert calls == ["diagnostic"]
    finally:
        agent.conn.stop()


def test_clock_floor_lets_a_device_without_rtc_accept_fresh_commands(tmp_path, monkeypatch):
    init_ran = time.time()
    fresh = signing.make_command(FLEET_KEY, "d1", "status", now=init_ran + 60)
    monkeypatch.setattr(time, "time", lambda: 86400.0)            # booted in 1970
    assert clock(init_ran) == init_ran and clock(0) == 86400.0
    agent, _ = _agent(tmp_path, clock_floor=init_ran)
    try:
        assert agent.handle(json.dumps(fresh)) == "status", agent.refused
    finally:
        agent.conn.stop()
    agent, _ = _agent(tmp_path / "b")
    try:
        fresh2 = signing.make_command(FLEET_KEY, "d1", "status", now=init_ran + 60)
        assert agent.handle(json.dumps(fresh2)) == "refused"
        assert agent.refused[-1][0] == "not-yet-valid"
    finally:
        agent.conn.stop()


# --- carrying the agent into MIGOS (migos.stage1.agentcarry) ------------------------------------

from migos.stage1 import agentcarry  # noqa: E402


def _reader(files):
    def read(path, secret=False):
        if path not in files:
            raise UsageError("cannot read %s" % path)
        return files[path]
    return read


def test_carry_plan_rewrites_paths_and_pins_device_and_clock():
    cfg = {"fleet": "f1", "key_file": "/etc/migos/agent.key",
           "password_file": "/etc/migos/agent.password", "state_dir": "/var/lib/migos-agent",
           "broker": {"host": "mqtt.example", "port": 8883, "tls_ca": "/etc/ssl/ca.pem",
                      "username": "u"}}
    src = {"/etc/migos/agent.key": (KEY + "\n").encode(), "/etc/migos/agent.password": b"pw\n",
           "/etc/ssl/ca.pem": b"CA"}
    files = agentcarry.carry_files(cfg, _reader(src), 1_750_000_000.7, "serial-123")
    assert set(files) == {agentcarry.CONFIG, agentcarry.KEY, agentcarry.PASSWORD,
                          "migos/agent/tls-ca.pem"}
    assert files[agentcarry.KEY] == (KEY + "\n").encode()
    assert files[agentcarry.PASSWORD] == b"pw\n" and files["migos/agent/tls-ca.pem"] == b"CA"
    carried = json.loads(files[agentcarry.CONFIG])
    assert carried["key_file"] == "agent.key" and carried["password_file"] == "agent.password"
    assert carried["broker"]["tls_ca"] == "tls-ca.pem" and carried["broker"]["username"] == "u"
    assert carried["device"] == "serial-123" and carried["clock_floor"] == 1_750_000_000
    assert "state_dir" not in carried
    assert KEY not in files[agentcarry.CONFIG].decode() and "pw" not in carried.values()
    # a configured device id wins over the one of the logs
    again = agentcarry.carry_files(dict(cfg, device="pi-7"), _reader(src), 1, "serial-123")
    assert json.loads(again[agentcarry.CONFIG])["device"] == "pi-7"
    # in MIGOS: files in RAM, only status allowed, the events followed
    rt = agentcarry.runtime_config(carried, "/run/migos/agent", "/run/migos/events.ndjson")
    assert rt["allow"] == ["status"] and rt["follow"] == "/run/migos/events.ndjson"
    assert rt["key_file"] == "/run/migos/agent/agent.key"
    assert rt["password_file"] == "/run/migos/agent/agent.password"
    assert rt["broker"]["tls_ca"] == "/run/migos/agent/tls-ca.pem"
    assert rt["state_dir"].startswith("/run/migos/agent/") and rt["log_mqtt"] is True
    check_config(dict(rt))


def test_carry_plan_refuses_bad_keys_and_configs():
    src = {"/k": b"abcd\n"}
    with pytest.raises(UsageError, match="shorter than 16"):
        agentcarry.carry_files({"fleet": "f", "key_file": "/k"}, _reader(src), 0, "d")
    with pytest.raises(UsageError, match="cannot read /nokey"):
        agentcarry.carry_files({"fleet": "f", "key_file": "/nokey"}, _reader(src), 0, "d")
    with pytest.raises(UsageError, match="lacks 'fleet'"):
        agentcarry.carry_files({"key_file": "/k"}, _reader(src), 0, "d")


def _init_args(root, **kw):
    import argparse
    return argparse.Namespace(root=root, agent_config=kw.get("agent_config"),
                              no_agent=kw.get("no_agent", False))


def test_which_agent_config_init_carries(tmp_path):
    root = str(tmp_path)
    assert agentcarry.config_path(_init_args(root)) is None
    os.makedirs(os.path.join(root, "etc/migos"))
    default = os.path.join(root, "etc/migos/agent.json")
    open(default, "w").write("{}")
    assert agentcarry.config_path(_init_args(root)) == default
    assert agentcarry.config_path(_init_args(root, no_agent=True)) is None
    with pytest.raises(UsageError, match="--agent-config /nope does not exist"):
        agentcarry.config_path(_init_args(root, agent_config="/nope"))


def test_erase_zeroes_every_cluster_then_deletes(tmp_path):
    import shutil
    import subprocess
    if not shutil.which("mkfs.vfat") or not shutil.which("mdel"):
        pytest.skip("needs dosfstools and mtools")
    from tests import balena_image
    from migos.stage2 import fatread
    key = (os.urandom(32).hex() + "\n").encode()
    pw = b"s3cret-mqtt-password\n"
    img = str(tmp_path / "fat.img")
    balena_image.make_fat(img, 16, "boot", {"config.txt": b"x\n", agentcarry.KEY: key,
                                            agentcarry.PASSWORD: pw,
                                            agentcarry.CONFIG: b"{}\n"}, fat_bits=16)
    data = open(img, "rb").read()
    fat = fatread.Fat(lambda o, n: data[o:o + n])
    plan = dict(agentcarry.erase_extents(fat))
    assert set(plan) == {agentcarry.KEY, agentcarry.PASSWORD}, "only the secrets are erased"
    for p, spans in plan.items():
        assert spans and all(n == fat.cluster_bytes for _, n in spans)
        assert any(data[o:o + n].startswith(key if p == agentcarry.KEY else pw) for o, n in spans)
    erased = agentcarry.erase_on_disk(img, 0)
    assert sorted(erased) == sorted(plan)
    after = open(img, "rb").read()
    assert key.strip() not in after and pw.strip() not in after
    for spans in plan.values():
        for o, n in spans:
            assert after[o:o + n] == b"\0" * n
    fat = fatread.Fat(lambda o, n: after[o:o + n])
    assert fat.lookup(agentcarry.KEY) is None and fat.lookup(agentcarry.PASSWORD) is None
    assert fat.lookup(agentcarry.CONFIG) is not None
    if shutil.which("fsck.fat"):
        r = subprocess.run(["fsck.fat", "-n", img], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True)
        assert r.returncode == 0, r.stdout


def test_init_carries_the_agent_and_restore_boot_erases_its_key(tmp_path):
    """The real init (fixture tree) finds /etc/migos/agent.json under --root by default and
    writes migos/agent/ with the key 0600; a key readable by others is refused with nothing
    written; restore-boot erases the key and leaves the boot partition as it was."""
    from migos.stage1 import tarball
    from tests import os_fixtures as fx
    from tests.conftest import run_migos
    root = fx.make_tree(str(tmp_path / "root"), "buster")
    disk = fx.make_disk_image(str(tmp_path / "disk.img"))
    cfg = fx.config_json(str(tmp_path / "config.json"))
    tar = tarball.make_fake(str(tmp_path / "t"))
    os.makedirs(os.path.join(root, "etc/migos"))
    key_path = os.path.join(root, "etc/migos/agent.key")
    with open(key_path, "w") as f:
        f.write(KEY + "\n")
    os.chmod(key_path, 0o644)
    with open(os.path.join(root, "etc/migos/agent.json"), "w") as f:
        json.dump({"fleet": "f1", "device": "pi-9", "key_file": "/etc/migos/agent.key",
                   "broker": {"host": "10.0.2.101", "port": 1883}}, f)
    boot = os.path.join(root, "boot")
    before = {p: open(os.path.join(boot, p), "rb").read() for p in os.listdir(boot)
              if os.path.isfile(os.path.join(boot, p))}
    argv = ("init", "--root", root, "-c", cfg, "-v", "2.80.3", "--migos-tarball", tar,
            "--disk", disk, "--no-api-check", "--no-vpn-check", "--log-level", "error")
    r = run_migos(*argv)
    assert r.returncode == 2 and "accessible to others" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and not os.path.exists(os.path.join(boot, "migos"))
    os.chmod(key_path, 0o600)
    t0 = int(time.time())
    r = run_migos(*argv)
    assert r.returncode == 0, r.stderr
    carried = json.load(open(os.path.join(boot, agentcarry.CONFIG)))
    assert carried["device"] == "pi-9" and carried["key_file"] == "agent.key"
    assert t0 - 1 <= carried["clock_floor"] <= time.time()
    assert open(os.path.join(boot, agentcarry.KEY)).read() == KEY + "\n"
    assert KEY not in r.stdout + r.stderr
    r = run_migos("restore-boot", "--root", root, "--log-level", "error")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(boot, "migos"))
    after = {p: open(os.path.join(boot, p), "rb").read() for p in os.listdir(boot)
             if os.path.isfile(os.path.join(boot, p))}
    assert after == before
    r = run_migos(*argv, "--no-agent")
    assert r.returncode == 0 and not os.path.exists(os.path.join(boot, agentcarry.DIR))


def test_runtime_reads_the_carried_agent_into_ram(tmp_path):
    from migos.runtime import main as rt

    class Disk:
        def __init__(self, files):
            self.files = files

        def listdir(self, path):
            return sorted(p.rsplit("/", 1)[1] for p in self.files if p.startswith(path + "/"))

        def read(self, path):
            return self.files.get(path)
    assert rt.read_agent(Disk({}), str(tmp_path / "a")) is None
    files = agentcarry.carry_files({"fleet": "f", "key_file": "/k"},
                                   _reader({"/k": KEY.encode()}), 5, "d")
    carried = rt.read_agent(Disk(files), str(tmp_path / "b"))
    assert carried["key_file"] == "agent.key" and carried["clock_floor"] == 5
    key = tmp_path / "b" / "agent.key"
    assert key.read_text() == KEY + "\n" and stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_spawn_runs_in_the_background_and_is_logged():
    from migos import log, run
    before = len(log.LOG.memory)
    proc = run.spawn([sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert proc.poll() is None, "spawn waited for the process"
    assert proc.wait(10) == 0
    logged = log.LOG.memory[before:]
    assert any('"state": "CMDLOG"' in l and "spawn: " in l for l in logged)
    with pytest.raises(run.CommandFailed, match="is not installed"):
        run.spawn(["/nonexistent/program"])
