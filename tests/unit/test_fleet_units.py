"""Fleet and gen_migos-boot pure parts: signing, nonce store, rollout planner, MBR/FAT
planning; device-side modules are Python 3.7 + standard library (paho lazily)."""

import ast
import os
import shutil
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from migos.fleet import signing, topics
from migos.fleet.rollout import Rollout
from migos.genboot import plan

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "packages", "migos", "migos")
DEVICE_SIDE = [os.path.join(PKG, "fleet", n) for n in
               ("__init__.py", "agent.py", "install.py", "logship.py", "mqtt.py", "signing.py",
                "topics.py")] + [
    os.path.join(PKG, "genboot", n) for n in ("__init__.py", "plan.py", "probe.py", "mtools.py")]
KEY = bytes(range(32))


def test_signing_accepts_and_refuses():
    now = 1000000.0
    dk = signing.device_key(KEY, "d1")
    env = signing.make_command(KEY, "d1", "init", ["-v", "2.50.1"], lifetime=60, now=now)
    assert signing.check(dk, "d1", env, now=now + 1) is env
    cases = [
        (dict(env, args=["-v", "9"]), "bad-signature"),
        ({k: v for k, v in env.items() if k != "sig"}, "unsigned"),
        (env, "expired", now + 61),
        (signing.make_command(KEY, "d1", "init", now=now + 1000), "not-yet-valid"),
        (signing.make_command(KEY, "d1", "rm", now=now), "unknown-command"),
        (signing.make_command(KEY, "d1", "init", lifetime=10 ** 6, now=now), "malformed"),
        ("[]", "malformed"),
    ]
    for case in cases:
        e, reason = case[0], case[1]
        with pytest.raises(signing.Refused) as r:
            signing.check(dk, "d1", e, now=case[2] if len(case) > 2 else now)
        assert r.value.reason == reason
    # a command for d2, signed with d2's key, is refused by d1 even if d1 held d2's key
    other = signing.make_command(KEY, "d2", "init", now=now)
    with pytest.raises(signing.Refused) as r:
        signing.check(signing.device_key(KEY, "d2"), "d1", other, now=now)
    assert r.value.reason == "wrong-device"


def test_nonce_store_persists_and_expires(tmp_path):
    path = str(tmp_path / "n.json")
    s = signing.NonceStore(path)
    s.use("a" * 32, expires=200, now=100)
    with pytest.raises(signing.Refused):
        signing.NonceStore(path).use("a" * 32, expires=200, now=150)
    signing.NonceStore(path).use("a" * 32, expires=400, now=201)    # expired: forgotten
    assert list(signing.NonceStore(path).seen) == ["a" * 32]


def test_topics_reject_wildcards():
    assert topics.topic("f", "d", "cmd") == "migos/f/d/cmd"
    for bad in ("+", "#", "a/b", "", "x" * 200):
        with pytest.raises(ValueError):
            topics.topic("f", bad, "cmd")


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 30), par=st.integers(1, 8), maxf=st.integers(0, 5),
       fails=st.lists(st.booleans(), min_size=30, max_size=30), seed=st.randoms())
def test_rollout_never_exceeds_limits(n, par, maxf, fails, seed):
    devices = ["d%d" % i for i in range(n)]
    r = Rollout(devices, max_parallel=par, max_failures=maxf)
    failed_when_started = []
    while not r.done:
        for d in r.to_start():
            failed_when_started.append(r.count("failed"))
            r.started(d)
        assert r.count("running") <= par
        running = [d for d in devices if r.state[d] == "running"]
        d = seed.choice(running)
        r.finished(d, not fails[int(d[1:])])
    r.finish()
    assert r.peak <= par
    assert all(f <= maxf for f in failed_when_started)     # nothing started after the stop
    if not r.stopped:
        assert r.count("skipped") == 0
    assert r.count("ok") + r.count("failed") + r.count("skipped") == n


def _mbr(entries):
    s = bytearray(512)
    for i, (ptype, start, count) in enumerate(entries):
        s[446 + 16 * i + 4] = ptype
        s[446 + 16 * i + 8:446 + 16 * i + 16] = struct.pack("<II", start, count)
    s[510:512] = b"\x55\xaa"
    return bytes(s)


def test_plan_refusals():
    base = {"path": "/dev/sdz", "kind": "block", "size": 1 << 30, "removable": True}
    plan.check_disk(base)
    for extra, words in (({"is_partition": True}, "partition"), ({"system": "on /"}, "system"),
                         ({"mounted": "on /mnt"}, "mounted"), ({"removable": False}, "removable"),
                         ({"read_only": True}, "read-only"), ({"kind": "other"}, "neither")):
        with pytest.raises(plan.Refusal) as r:
            plan.check_disk(dict(base, **extra), force=False)
        assert words in r.value.problem
    plan.check_disk(dict(base, removable=False), force=True)
    with pytest.raises(plan.Refusal):
        plan.check_disk(dict(base, system="on /"), force=True)
    assert plan.boot_partition(base, _mbr([(0x0c, 8192, 1000)]))["start"] == 8192 * 512
    for sector, words in ((b"\0" * 512, "no MBR"), (_mbr([(0x83, 8192, 1000)]), "not FAT"),
                          (_mbr([(0x0c, 8192, 1 << 30)]), "past the end")):
        with pytest.raises(plan.Refusal) as r:
            plan.boot_partition(base, sector)
        assert words in r.value.problem
    assert plan.staging_order(["migos.itb", "config.txt", "a/b"])[-1] == "config.txt"
    assert plan.parent_dirs(["a/b/c", "a/d"]) == ["a", "a/b"]


def test_device_side_imports_only_stdlib_and_lazy_paho():
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    if not stdlib:
        pytest.skip("needs Python >= 3.10")
    for path in DEVICE_SIDE:
        tree = ast.parse(open(path).read())
        for node in tree.body:      # module level: stdlib or migos only
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in stdlib for a in node.names), path
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in stdlib, (path, node.module)


def test_vermin_37():
    vermin = shutil.which("vermin") or os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin not installed")
    proc = subprocess.run([vermin, "-t=3.7-", "--no-tips", "--violations", "--eval-annotations"]
                          + DEVICE_SIDE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    assert proc.returncode == 0, proc.stdout


def test_pyz_vendors_paho(tmp_path):
    """migos.pyz carries paho-mqtt: a plain python3 without the venv runs the agent's MQTT
    layer from it."""
    from stages import dist, vendor
    if not vendor.files():
        pytest.skip("paho-mqtt not installed in this interpreter")
    pyz = str(tmp_path / "migos.pyz")
    dist.write_pyz(pyz, 1_700_000_000)
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    code = ("import sys; sys.path.insert(0, %r); import migos.fleet.mqtt as m; "
            "c = m._paho(); print(c.__file__)" % pyz)
    proc = subprocess.run([python, "-I", "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert proc.returncode == 0 and "migos.pyz/paho/mqtt/client.py" in proc.stdout, proc.stdout


def test_agent_busy_and_status_without_broker(tmp_path):
    """One command at a time; ``status`` is answered while another command runs."""
    import threading
    from migos.fleet.agent import Agent
    gate, calls = threading.Event(), []

    def runner(cmd, args, progress):
        calls.append(cmd)
        gate.wait(10)
        return 0
    cfg = {"fleet": "f", "device": "d1", "state_dir": str(tmp_path), "broker": {"port": 1}}
    agent = Agent(cfg, signing.device_key(KEY, "d1"), runner=runner, ship_logs=False)
    try:
        assert agent.handle(json_cmd("init", ["-c", "c.json", "-v", "1.0.0"])) == "started"
        assert agent.handle(json_cmd("backup", ["--out", "x"])) == "busy"
        assert agent.handle(json_cmd("status")) == "status"
        gate.set()
        for _ in range(100):
            if agent.state.get("state") == "done":
                break
            import time
            time.sleep(0.02)
        assert agent.state["state"] == "done" and calls == ["init"]
        assert agent.handle(json_cmd("backup", ["--out", "x"])) == "started"
    finally:
        gate.set()
        agent.conn.client.loop_stop()


def json_cmd(cmd, args=()):
    import json
    return json.dumps(signing.make_command(KEY, "d1", cmd, list(args))).encode()


def test_gen_migos_boot_entry_point():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(os.path.dirname(PKG), "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    mod, func = scripts["gen_migos-boot"].split(":")
    import importlib
    assert callable(getattr(importlib.import_module(mod), func))
