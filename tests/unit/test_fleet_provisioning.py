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
