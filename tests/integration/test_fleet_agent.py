"""Agent + mosquitto (127.0.0.1, random port) + fleet CLI: signed commands run; tampered,
replayed (also after an agent restart), expired, unsigned, unknown and wrongly-keyed ones
are refused, logged and answered on the status topic; TLS with username/password."""

import json
import os
import queue
import subprocess
import sys
import time

import pytest

from migos.fleet import signing, topics
from migos.fleet.agent import Agent
from migos.fleet.mqtt import BrokerOptions, Connection
from tests.conftest import MIGOS_PKG, run_migos
from tests.mqtt_broker import Broker, broker  # noqa: F401  (fixture)
from tests import os_fixtures

FLEET = "testfleet"


class Recorder:
    """A fake command runner: records calls, prints one progress line, exits ``rc``."""

    def __init__(self, rc=0):
        self.calls, self.rc = [], rc

    def __call__(self, cmd, args, progress):
        self.calls.append((cmd, list(args)))
        progress("fake %s running" % cmd)
        return self.rc


def agent_for(tmp_path, port, fleet_key, device="dev1", runner=None, state="state", **broker_extra):
    cfg = {"fleet": FLEET, "device": device, "state_dir": str(tmp_path / state / device),
           "broker": dict({"host": "127.0.0.1", "port": port}, **broker_extra), "key_file": "-"}
    return Agent(cfg, signing.device_key(fleet_key, device), runner=runner or Recorder(),
                 ship_logs=False, password=broker_extra.pop("password", None))


class Listener:
    def __init__(self, port, topic_name, **kw):
        self.q = queue.Queue()
        self.conn = Connection(BrokerOptions(port=port, **kw), "listener-%s" % os.urandom(3).hex(),
                               on_message=lambda t, p: self.q.put(json.loads(p.decode())))
        self.conn.subscribe(topic_name)
        assert self.conn.start(wait=10)
        time.sleep(0.2)

    def wait_for(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                m = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            seen.append(m)
            if pred(m):
                return m
        raise AssertionError("no matching message; saw %r" % seen)

    def publish(self, topic_name, obj):
        self.conn.publish(topic_name, obj if isinstance(obj, (bytes, str)) else json.dumps(obj),
                          timeout=5)


@pytest.fixture
def fleet_key():
    return bytes.fromhex(signing.new_fleet_key())


def test_signed_command_runs_real_child_and_cli_list(tmp_path, broker, fleet_key):
    """A signed ``diagnostic`` from the CLI runs ``migos diagnostic`` as a child process on
    the agent; its exit code and output reach the operator, and ``fleet list`` shows it."""
    from migos.fleet.agent import subprocess_runner
    root = tmp_path / "os"
    os_fixtures.make_tree(str(root), "bookworm")
    expected = run_migos("diagnostic", "--root", root, "--no-api-check", "--no-vpn-check",
                         "--json").returncode
    agent = agent_for(tmp_path, broker.port, fleet_key, runner=subprocess_runner)
    assert agent.start()
    keyfile = tmp_path / "fleet.key"
    keyfile.write_text(fleet_key.hex())
    listen = Listener(broker.port, topics.topic(FLEET, "dev1", "status"))
    try:
        env = dict(os.environ, PYTHONPATH=MIGOS_PKG)
        proc = subprocess.run(
            [sys.executable, "-m", "migos", "fleet", "send", "--broker", "127.0.0.1:%d" % broker.port,
             "--fleet", FLEET, "--key-file", str(keyfile), "--device", "dev1", "--timeout", "60",
             "diagnostic", "--root", str(root), "--no-api-check", "--no-vpn-check", "--json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
            timeout=90)
        result = listen.wait_for(lambda m: m.get("type") == "result")
        assert result["cmd"] == "diagnostic" and result["rc"] == expected
        assert ("exit %d" % expected) in proc.stdout
        assert proc.returncode == (0 if expected == 0 else 1), proc.stdout + proc.stderr
        listed = run_migos("fleet", "list", "--broker", "127.0.0.1:%d" % broker.port,
                           "--fleet", FLEET, "--json", "--wait", "0.5")
        states = json.loads(listed.stdout)
        assert states["dev1"]["online"] is True
        assert states["dev1"]["state"]["cmd"] == "diagnostic"
        assert states["dev1"]["state"]["state"] == ("done" if expected == 0 else "failed")
    finally:
        agent.stop()
        listen.conn.stop()


def test_refusals_and_replay_across_restart(tmp_path, broker, fleet_key):
    rec = Recorder()
    agent = agent_for(tmp_path, broker.port, fleet_key, runner=rec)
    assert agent.start()
    listen = Listener(broker.port, topics.topic(FLEET, "dev1", "status"))
    cmd_topic = topics.topic(FLEET, "dev1", "cmd")

    def expect(payload, reason):
        listen.publish(cmd_topic, payload)
        m = listen.wait_for(lambda m: m.get("type") in ("refused", "result"))
        assert m["type"] == "refused" and m["reason"] == reason, m

    try:
        good = signing.make_command(fleet_key, "dev1", "backup", ["--out", "/tmp/x", "--pretend"])
        listen.publish(cmd_topic, good)
        m = listen.wait_for(lambda m: m.get("type") == "result")
        assert m["ok"] and rec.calls == [("backup", ["--out", "/tmp/x", "--pretend"])]

        expect(good, "replayed")
        tampered = dict(signing.make_command(fleet_key, "dev1", "backup", ["--out", "/tmp/x"]),
                        args=["--out", "/etc"])
        expect(tampered, "bad-signature")
        unsigned = signing.make_command(fleet_key, "dev1", "diagnostic")
        del unsigned["sig"]
        expect(unsigned, "unsigned")
        expired = signing.make_command(fleet_key, "dev1", "diagnostic", now=time.time() - 3600,
                                       lifetime=60)
        expect(expired, "expired")
        expect(signing.make_command(fleet_key, "dev1", "shell", ["-c", "id"]), "unknown-command")
        other_key = bytes.fromhex(signing.new_fleet_key())
        expect(signing.make_command(other_key, "dev1", "diagnostic"), "bad-signature")
        expect(signing.make_command(fleet_key, "dev2", "diagnostic"), "bad-signature")
        expect(signing.make_command(fleet_key, "dev1", "takeover", ["--no-such-option"]),
               "bad-arguments")
        expect(b"not json", "malformed")
        assert rec.calls == [("backup", ["--out", "/tmp/x", "--pretend"])]   # nothing else ran
        reasons = [r for r, _ in agent.refused]
        assert reasons == ["replayed", "bad-signature", "unsigned", "expired", "unknown-command",
                           "bad-signature", "bad-signature", "bad-arguments", "malformed"]
    finally:
        agent.stop()
    # a new agent process on the same state dir still refuses the replay
    rec2 = Recorder()
    agent2 = agent_for(tmp_path, broker.port, fleet_key, runner=rec2)
    assert agent2.start()
    try:
        time.sleep(0.2)
        expect(good, "replayed")
        fresh = signing.make_command(fleet_key, "dev1", "takeover", ["--pretend", "--no-ack"])
        listen.publish(cmd_topic, fresh)
        m = listen.wait_for(lambda m: m.get("type") == "result")
        assert m["ok"] and rec2.calls == [("takeover", ["--pretend", "--no-ack"])]
    finally:
        agent2.stop()
        listen.conn.stop()


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def test_tls_and_password(tmp_path, fleet_key):
    """TLS (a CA made by the test) + username/password; a wrong password never connects."""
    d = str(tmp_path)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-days", "1",
             "-subj", "/CN=migos-test-ca")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", d + "/srv.key", "-out", d + "/srv.csr", "-subj", "/CN=127.0.0.1")
    with open(d + "/ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", d + "/srv.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key",
             "-CAcreateserial", "-out", d + "/srv.pem", "-days", "1", "-extfile", d + "/ext")
    os.chmod(d + "/srv.key", 0o644)
    password = os.urandom(12).hex()
    pwfile = d + "/passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", pwfile, "dev1", password], check=True)
    os.chmod(pwfile, 0o644)
    b = Broker(d, tls={"ca": d + "/ca.pem", "cert": d + "/srv.pem", "key": d + "/srv.key"},
               password_file=pwfile).start()
    try:
        rec = Recorder()
        agent = agent_for(tmp_path, b.port, fleet_key, runner=rec, tls_ca=d + "/ca.pem",
                          username="dev1", password=password)
        assert agent.start(), "TLS + password connection failed"
        with open(d + "/pw", "w") as f:
            f.write(password)
        keyfile = tmp_path / "fleet.key"
        keyfile.write_text(fleet_key.hex())
        proc = run_migos("fleet", "send", "--broker", "127.0.0.1:%d" % b.port, "--tls-ca",
                         d + "/ca.pem", "--username", "dev1", "--password-file", d + "/pw",
                         "--fleet", FLEET, "--key-file", keyfile, "--device", "dev1",
                         "--timeout", "20", "status", timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "ok 1" in proc.stdout
        agent.stop()
        bad = Connection(BrokerOptions(port=b.port, tls_ca=d + "/ca.pem", username="dev1",
                                       password="wrong"), "bad-client")
        assert not bad.start(wait=2)
        bad.stop()
        plain = Connection(BrokerOptions(port=b.port, username="dev1", password=password), "plain")
        assert not plain.start(wait=2)     # no TLS: the broker does not talk to it
        plain.stop()
    finally:
        b.stop()
    # client certificates instead of a password
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", d + "/cli.key", "-out", d + "/cli.csr", "-subj", "/CN=dev1")
    _openssl("x509", "-req", "-in", d + "/cli.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key",
             "-CAcreateserial", "-out", d + "/cli.pem", "-days", "1")
    b = Broker(d, tls={"ca": d + "/ca.pem", "cert": d + "/srv.pem", "key": d + "/srv.key"},
               extra=["require_certificate true", "use_identity_as_username true",
                      "allow_anonymous false"]).start()
    try:
        agent = agent_for(tmp_path, b.port, fleet_key, runner=Recorder(), state="s2",
                          tls_ca=d + "/ca.pem", tls_cert=d + "/cli.pem", tls_key=d + "/cli.key")
        assert agent.start(), "client-certificate connection failed"
        agent.stop()
        nocert = Connection(BrokerOptions(port=b.port, tls_ca=d + "/ca.pem"), "no-cert")
        assert not nocert.start(wait=2)
        nocert.stop()
    finally:
        b.stop()


def test_agent_command_line_process(tmp_path, broker, fleet_key):
    """``migos agent --config`` as its own process: announces itself, ships its log events
    to the status topic, answers ``fleet send --all``, and on SIGTERM goes offline cleanly."""
    import signal
    keyfile, fkey = tmp_path / "agent.key", tmp_path / "fleet.key"
    fkey.write_text(fleet_key.hex())
    assert run_migos("fleet", "device-key", "--key-file", fkey, "--device", "pi-cli",
                     "--out", keyfile).returncode == 0
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({"fleet": FLEET, "device": "pi-cli", "key_file": str(keyfile),
                               "state_dir": str(tmp_path / "st"),
                               "broker": {"host": "127.0.0.1", "port": broker.port}}))
    listen = Listener(broker.port, "migos/%s/pi-cli/status" % FLEET)
    proc = subprocess.Popen([sys.executable, "-m", "migos", "agent", "--config", str(cfg)],
                            env=dict(os.environ, PYTHONPATH=MIGOS_PKG), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    try:
        batch = listen.wait_for(lambda m: m.get("type") == "log" and any(
            "agent listening" in e["msg"] for e in m["events"]))
        assert all(e["device"] for e in batch["events"])
        out = run_migos("fleet", "send", "--broker", "127.0.0.1:%d" % broker.port, "--fleet",
                        FLEET, "--key-file", fkey, "--all", "--timeout", "20", "status", timeout=60)
        assert out.returncode == 0 and "pi-cli" in out.stdout and "ok 1" in out.stdout, out.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        listen.conn.stop()
    assert rc == 0, proc.stderr.read()
    listed = json.loads(run_migos("fleet", "list", "--broker", "127.0.0.1:%d" % broker.port,
                                  "--fleet", FLEET, "--json", "--wait", "0.5").stdout)
    assert listed["pi-cli"]["online"] is False
    assert listed["pi-cli"]["state"]["state"] == "idle"
