"""Whole migrations of an emulated device, from power-on in the old OS's boot partition to the
(synthetic) balenaOS printing its config, and what happens when things go wrong on the way.

The machine and why it is qemu virt: emulated_pi.py. Every boot goes through
``emulated_pi.firmware_argv``, which reads config.txt from the disk's first FAT partition as
the Pi firmware would. The old boot partition is prepared by the real ``migos init`` with the
built boot tarball (``emulated_pi.old_os_disk``), and the old OS itself boots (a tiny init
printing ``OLD OS BOOTED``), so "back in the old OS" is a real boot, not a file comparison.

Faults and how they are made (all real, no mocks):
* corrupt image: the served .zst has bytes flipped near its end;
* network cut: the test's HTTP server drops the download mid-body and answers nothing for a
  while (``BalenaApi.cut``): to the guest the server is gone, as with a cable pulled upstream;
* hang: ``migos.fault=hang:WRITE`` on the kernel command line (``migos/cmdline.env``) makes the
  state machine stop making progress; qemu's i6300esb watchdog, fed by the runtime only on
  progress, resets the machine (qemu exits: -no-reboot).
"""

import json
import os
import re
import secrets
import subprocess
import time
import uuid

import pytest

from tests.balena_api import BalenaApi
from tests.balena_image import compress, make_balena_image, region_sha

from . import emulated_pi as pi
from .qemu import Machine, require_dist

pytestmark = pytest.mark.system

DEVICE_TYPE = "raspberrypi4-64"      # the bookworm fixture is a Pi 4
OLD_HOSTNAME = "bookworm-pi"
WIFI_SECRET = "bookworm-nm-psk"      # in the old OS's NetworkManager keyfile
WATCHDOG = ("-device", "i6300esb")   # a hardware watchdog, as bcm2835_wdt is on the Pi


class Rig(object):
    """One emulated device: an old-OS disk prepared by `migos init`, a synthetic balenaOS image
    (zstd) served by a local BalenaApi, and boots through the firmware logic."""

    def __init__(self, work, corrupt=False, api_kw=None, init_args=(), agent=None):
        self.work = work
        self.agent = agent           # FleetAgent: /etc/migos/agent.json + key on the old OS
        image = os.path.join(work, "balena.img")
        make_balena_image(image, DEVICE_TYPE, boot_files=pi.bootable_balena_files(work),
                          boot_mib=48, root_mib=16, state_mib=8, data_mib=8, kernel_mib=0.0625,
                          fill=0.3, random_fraction=0.3)
        self.packed = compress(image, "zst")
        if corrupt:
            with open(self.packed, "r+b") as f:
                at = int(os.fstat(f.fileno()).st_size * 0.85)
                f.seek(at)
                damaged = bytes(b ^ 0x5A for b in f.read(64))
                f.seek(at)
                f.write(damaged)
        self.config = {"deviceType": DEVICE_TYPE, "applicationId": 1234, "uuid": uuid.uuid4().hex,
                       "apiEndpoint": "http://%s:%d" % (pi.GUEST_SERVER, pi.GUEST_PORT),
                       "apiKey": secrets.token_hex(16)}
        url = "http://%s:%d/files/balena.img.zst" % (pi.GUEST_SERVER, pi.GUEST_PORT)
        self.disk, self.info, self.original = pi.old_os_disk(
            work, url, self.config, init_args=init_args,
            root_files=agent.root_files() if agent else None)
        self.api = BalenaApi(files={"balena.img.zst": self.packed}, **(api_kw or {})).start()
        self.port = int(self.api.url.rsplit(":", 1)[1])
        self.boots = 0

    def boot(self, name=None):
        self.boots += 1
        forward = [(pi.GUEST_SERVER, pi.GUEST_PORT, self.port)]
        if self.agent:
            forward.append((pi.GUEST_MQTT, 1883, self.agent.broker.port))
        argv = pi.firmware_argv(self.disk, self.work, forward=forward, extra=WATCHDOG)
        return Machine(argv, os.path.join(self.work, "%s.log" % (name or "boot%d" % self.boots)))

    def old_p2_sha(self):
        return region_sha(self.disk, *self.info["p2"])

    def old_p1_file(self, name):
        """A file of the old boot FAT, wherever the MBR points now (mtools at its offset)."""
        r = subprocess.run(["mtype", "-i", "%s@@%d" % (self.disk, self.info["p1"][0]), "::" + name],
                           capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
        return r.stdout if r.returncode == 0 else None

    def old_p1_region(self):
        with open(self.disk, "rb") as f:
            f.seek(self.info["p1"][0])
            return f.read(self.info["p1"][1])

    def close(self):
        self.api.stop()
        if self.agent:
            self.agent.close()


class FleetAgent(object):
    """The fleet side of a device: mosquitto on 127.0.0.1 (the guest reaches it as
    GUEST_MQTT:1883), the fleet key, the device's agent.json + key for its old OS, and a
    subscriber recording everything under migos/FLEET/DEVICE/."""

    FLEET, DEVICE = "sysfleet", "pi-sys-1"

    def __init__(self, work):
        from migos.fleet import signing
        from migos.fleet.mqtt import BrokerOptions, Connection
        from tests.mqtt_broker import Broker
        self.broker = Broker(work).start()
        self.fleet_key = bytes.fromhex(signing.new_fleet_key())
        self.key_hex = signing.device_key(self.fleet_key, self.DEVICE).hex()
        self.messages = []          # (topic, payload bytes)
        self.conn = Connection(BrokerOptions(port=self.broker.port), "test-operator",
                               on_message=lambda t, p: self.messages.append((t, p)))
        self.conn.subscribe("migos/%s/%s/#" % (self.FLEET, self.DEVICE))
        assert self.conn.start(wait=10)

    def root_files(self):
        cfg = {"fleet": self.FLEET, "device": self.DEVICE, "key_file": "/etc/migos/agent.key",
               "broker": {"host": pi.GUEST_MQTT, "port": 1883}}
        return {"etc/migos/agent.json": json.dumps(cfg).encode(),
                "etc/migos/agent.key": (self.key_hex + "\n").encode()}

    def prime_session(self):
        """Connect once as the device's agent (same client id, persistent session, subscribed
        to its command topic) as the agent on the old OS would have: commands sent while the
        device is away are then queued by the broker and delivered when the agent in MIGOS
        connects, so the test does not race the agent's start."""
        from migos.fleet.mqtt import BrokerOptions, Connection
        c = Connection(BrokerOptions(port=self.broker.port),
                       "migos-agent-%s-%s" % (self.FLEET, self.DEVICE), clean_session=False)
        c.subscribe("migos/%s/%s/cmd" % (self.FLEET, self.DEVICE))
        assert c.start(wait=10)
        time.sleep(0.3)
        c.stop()

    def command(self, cmd, retain=False):
        from migos.fleet import signing
        env = signing.make_command(self.fleet_key, self.DEVICE, cmd, lifetime=900)
        self.conn.publish("migos/%s/%s/cmd" % (self.FLEET, self.DEVICE), json.dumps(env),
                          retain=retain, timeout=5)
        return env["id"]

    def status(self):
        """Every JSON object published on the status topic so far."""
        out = []
        for t, p in list(self.messages):
            if t.endswith("/status"):
                try:
                    out.append(json.loads(p.decode()))
                except ValueError:
                    pass
        return out

    def wait_status(self, pred, timeout, machine=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.status():
                if pred(m):
                    return m
            if machine is not None:
                assert machine.proc.poll() is None, "qemu ended; last lines:\n" + \
                    "\n".join(machine.lines[-20:])
            time.sleep(0.2)
        raise AssertionError("no such status message within %ss; got types %r" % (
            timeout, sorted({m.get("type") for m in self.status()})))

    def close(self):
        self.conn.stop()
        self.broker.stop()


@pytest.fixture
def rig(tmp_path):
    require_dist()
    made = []

    def make(**kw):
        if kw.pop("with_agent", False):
            kw["agent"] = FleetAgent(str(tmp_path))
        r = Rig(str(tmp_path), **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def migrate_to_success(m):
    m.expect(r"^MIGOS \S+ ready$", timeout=180)
    m.expect(r'"state": "SUCCESS"', timeout=600)
    assert m.wait_exit(120) == 0


def expect_balena(r, name="balena"):
    m = r.boot(name)
    try:
        got = m.expect(r"BALENA BOOTED hostname=(\S*) uuid=(\S*)|^MIGOS \S+ ready$", timeout=180)
        assert got.group(1) is not None, "MIGOS booted again instead of balenaOS"
        assert (got.group(1), got.group(2)) == (OLD_HOSTNAME, r.config["uuid"])
    finally:
        m.kill()


def test_whole_migration_boots_balena(rig):
    """The whole path, with the remote log sink set by `migos init --log-http`, and the fleet
    agent: its /etc/migos/agent.json is carried into MIGOS by init (the default), where the
    agent publishes the migration's events on the device's status topic, refuses anything but
    ``status`` and answers a ``status`` (both sent while the device was away, queued by the
    broker for the agent's persistent session); its key is zeroed and deleted from the old
    boot FAT on SUCCESS."""
    r = rig(init_args=("--log-http", "http://%s:%d/logs" % (pi.GUEST_SERVER, pi.GUEST_PORT)),
            with_agent=True)
    agent = r.agent
    assert r.old_p1_file("migos/agent/agent.key").strip() == agent.key_hex.encode(), \
        "init did not carry the agent's key"
    agent.prime_session()
    refused_id = agent.command("diagnostic")
    status_id = agent.command("status")
    m = r.boot()
    try:
        m.expect(r"^MIGOS \S+ ready$", timeout=180)
        m.expect(r'"state": "SUCCESS"', timeout=600)
        assert m.wait_exit(120) == 0
    finally:
        m.kill()
    refused = agent.wait_status(lambda e: e.get("id") == refused_id, timeout=1)
    answer = agent.wait_status(lambda e: e.get("id") == status_id, timeout=1)
    assert refused["type"] == "refused" and refused["reason"] == "not-allowed-here", refused
    assert answer["type"] == "result" and answer["ok"] and answer["status"]["allow"] == ["status"]
    console = "\n".join(m.lines)
    assert r.config["apiKey"] not in console, "the API key reached the console"
    assert WIFI_SECRET not in console, "the wifi passphrase reached the console"
    assert agent.key_hex not in console, "the agent's key reached the console"
    assert "hardware watchdog armed" in console
    assert "command refused: not-allowed-here" in console, "the refusal was not logged"
    assert '"staged": true' in console and "image verified before writing" in console
    # the agent followed the migration's events to MQTT, up to the runtime's SUCCESS
    shipped_mqtt = [e for msg in agent.status() if msg.get("type") == "log" for e in msg["events"]]
    assert any(e.get("msg") == "state SWITCH" for e in shipped_mqtt), "migrate's events not on MQTT"
    assert any(e.get("state") == "SUCCESS" and e.get("script") == "main.py" for e in shipped_mqtt)
    assert any("erased migos/agent/agent.key" in e.get("msg", "") for e in shipped_mqtt)
    for _, payload in agent.messages:
        assert agent.key_hex.encode() not in payload and r.config["apiKey"].encode() not in payload
    # the key is gone from the old boot FAT: file deleted, its bytes nowhere in the partition
    assert r.old_p1_file("migos/agent/agent.key") is None
    assert r.old_p1_file("migos/agent/agent.json") is not None
    assert agent.key_hex.encode() not in r.old_p1_region(), "the key survives on the card"
    # the full stage-2 log, kept in RAM, was written to the old boot FAT at the end
    log = r.old_p1_file("migos-stage2.log")
    assert log is not None, "no stage-2 log on the old boot partition"
    events = [json.loads(l) for l in log.decode().splitlines() if l.startswith("{")]
    assert any(e.get("state_name") == "SWITCH" for e in events)
    assert any(e["state"] == "SUCCESS" for e in events)
    assert r.config["apiKey"].encode() not in log and WIFI_SECRET.encode() not in log
    # the remote sink got the events as they happened (runtime and migrate), then the full log
    batches = [json.loads(b) for t, b in r.api.logs if t == "application/json"]
    shipped = [e for batch in batches for e in batch]
    assert any(e.get("msg") == "state SWITCH" for e in shipped), "migrate's events were not shipped"
    assert any(e.get("script") == "main.py" for e in shipped), "the runtime's events were not shipped"
    full = [b for t, b in r.api.logs if t == "application/x-ndjson"]
    assert full and b'"state": "SUCCESS"' in full[-1], "no full log uploaded at the end"
    for body in [b for _, b in r.api.logs]:
        assert r.config["apiKey"].encode() not in body and WIFI_SECRET.encode() not in body
    expect_balena(r)


def test_corrupt_image_gives_the_old_os_back(rig):
    """A corrupt image is found by the verify-first pass before anything is written: MIGOS runs
    restore-boot and reboots, the firmware boots the old OS, and its root partition and boot
    configuration are exactly what they were before `migos init`. The fleet agent was carried
    too: restore-boot zeroes and deletes its key on the old boot FAT."""
    r = rig(corrupt=True, with_agent=True)
    assert r.old_p1_file("migos/agent/agent.key") is not None
    p2 = r.old_p2_sha()
    m = r.boot()
    try:
        m.expect(r"^MIGOS \S+ ready$", timeout=180)
        m.expect(r"the image is corrupt", timeout=300)
        m.expect(r"old boot configuration restored; rebooting into the old OS", timeout=120)
        assert m.wait_exit(120) == 0
    finally:
        m.kill()
    assert not any("state WRITE" in l for l in m.lines), "a corrupt image reached WRITE"
    assert r.old_p2_sha() == p2, "the old OS's root partition was changed"
    assert r.old_p1_file("config.txt") == r.original["config.txt"]
    log = r.old_p1_file("migos-stage2.log") or b""
    assert b"the image is corrupt" in log, "the stage-2 log was not kept for the old OS"
    assert r.old_p1_file("migos/agent/agent.key") is None
    assert r.agent.key_hex.encode() not in r.old_p1_region(), "the key survives on the card"
    assert r.agent.key_hex.encode() not in log
    old = r.boot("old-os")
    try:
        got = old.expect(r"OLD OS BOOTED|^MIGOS \S+ ready$", timeout=180)
        assert "OLD OS" in got.group(0), "MIGOS booted again instead of the old OS"
    finally:
        old.kill()


def test_network_cut_during_the_download_resumes(rig):
    """The image server vanishes for 15 s in the middle of the download (throttled so that
    the middle exists): migrate resumes with Range where the stream stopped, and the device
    ends in balenaOS."""
    r = rig(api_kw={"rate": 1 << 20})
    size = os.path.getsize(r.packed)
    m = r.boot()
    try:
        m.expect(r"^MIGOS \S+ ready$", timeout=180)
        deadline = time.monotonic() + 300
        while r.api.total_sent("/files/balena.img.zst") < size * 0.4:
            assert time.monotonic() < deadline, "the download never got going"
            assert m.proc.poll() is None, "\n".join(m.lines[-20:])
            time.sleep(0.2)
        r.api.cut()
        cut_at = r.api.total_sent("/files/balena.img.zst")
        time.sleep(15)
        r.api.restore()
        m.expect(r'"state": "SUCCESS"', timeout=600)
        assert m.wait_exit(120) == 0
    finally:
        m.kill()
    assert cut_at < size, "the cut came after the download had finished"
    ranges = [q[2] for q in r.api.requests if q[1].endswith("balena.img.zst") and q[2]]
    assert ranges, "the download was not resumed with Range"
    assert any("connection dropped" in l or "cannot reach" in l for l in m.lines)
    expect_balena(r)


def test_hang_is_reset_by_the_watchdog_and_resumes(rig):
    """The state machine hangs in WRITE (fault injection); the hardware watchdog, no longer
    fed, resets the machine; the next boot resumes the migration to balenaOS."""
    r = rig()
    env = os.path.join(r.work, "cmdline.env")
    with open(env, "w") as f:
        f.write("migos_extra=migos.fault=hang:WRITE migos.stall=20\n")
    img = "%s@@%d" % (r.disk, r.info["p1"][0])
    tools_env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mcopy", "-o", "-i", img, env, "::migos/cmdline.env"], check=True, env=tools_env)
    m = r.boot()
    try:
        m.expect(r"^MIGOS \S+ ready$", timeout=180)
        m.expect(r"hardware watchdog armed", timeout=60)
        m.expect(r"fault injection: hanging in state WRITE", timeout=300)
        m.expect(r"no progress for 20s", timeout=120)
        t = time.monotonic()
        assert m.wait_exit(120) == 0           # the watchdog's reset ends qemu (-no-reboot)
        reset_after = time.monotonic() - t
    finally:
        m.kill()
    assert not any("rebooting" in l for l in m.lines), "the runtime rebooted, not the watchdog"
    subprocess.run(["mdel", "-i", img, "::migos/cmdline.env"], check=True, env=tools_env)
    m = r.boot("resume")
    try:
        migrate_to_success(m)
    finally:
        m.kill()
    assert any('"decision": "resume"' in l for l in m.lines), "the second boot did not resume"
    expect_balena(r)
    assert reset_after < 120


# Kill points in the order a migration reaches them: (what arms the cut, extra delay in seconds).
# What arms it is a console line (a regex) or "write N%": the first write progress report at or
# past N % of the image, so the late cuts in WRITE follow the bytes written, not the clock of a
# machine that may be faster or slower. The chain cuts power (SIGKILL of qemu) at each in turn on
# the same disk; every boot after a cut must come up in MIGOS again and resume, until a cut after
# the MBR switch finds balenaOS already in place. INJECT comes early: config.json goes into
# resin-boot as soon as the stream has passed it, in the middle of WRITE.
KILL_POINTS = [("MIGOS \\S+ ready", 2.0), ("state PREFLIGHT", 0.3), ("state PLAN", 0.1),
               ("state WRITE", 0.0), ("state WRITE", 0.5),
               ("state INJECT", 0.0), ("state INJECT", 0.3), ("state INJECT", 0.7),
               ("write 30%", 0.0), ("write 50%", 0.0), ("write 65%", 0.0), ("write 80%", 0.0),
               ("write 90%", 0.0), ("state DRAIN", 0.0), ("state DRAIN", 0.1), ("state CHECK", 0.0),
               ("state CHECK", 0.2), ("state SWITCH", 0.0), ("state SWITCH", 0.05), ("state SWITCH", 0.1)]
INJECT_POINT = 5


STATE_ORDER = ["MIGOS \\S+ ready", "state PREFLIGHT", "state PLAN", "state WRITE", "state INJECT",
               "write", "state DRAIN", "state CHECK", "state SWITCH", "state DONE", '"state": "SUCCESS"']
WRITE_PROGRESS = r"write (\d+)/(\d+) MiB"


def reaches(arm, line):
    """Whether console ``line`` reaches kill point ``arm``."""
    at = re.fullmatch(r"write (\d+)%", arm)
    if not at:
        return re.search(arm, line) is not None
    done = re.search(WRITE_PROGRESS, line)
    return bool(done) and 100 * int(done.group(1)) >= int(at.group(1)) * int(done.group(2))


def wait_for_cut(m, arm, first):
    """Read the console until kill point ``arm`` (True) or a state after it (the line, when a
    resumed run has already gone past it)."""
    if reaches(arm, first.string):
        return True
    kind = "write" if arm.startswith("write ") else arm
    later = STATE_ORDER[STATE_ORDER.index(kind) + 1:]
    watch = "|".join(later + [WRITE_PROGRESS if kind == "write" else arm])
    while True:
        line = m.expect(watch, timeout=300).string
        if reaches(arm, line):
            return True
        passed = [s for s in later if s != "write" and re.search(s, line)]
        if passed:
            return passed[0]


def kill_points(n):
    """``n`` kill points spread over KILL_POINTS, the first, INJECT and the last SWITCH always in."""
    if n >= len(KILL_POINTS):
        return list(KILL_POINTS)
    must = {0, INJECT_POINT, len(KILL_POINTS) - 3}
    step = (len(KILL_POINTS) - 1) / max(1, n - 1)
    picked = sorted(must | {round(i * step) for i in range(n)})
    while len(picked) > n:
        extra = [i for i in picked if i not in must]
        picked.remove(extra[len(extra) // 2])
    return [KILL_POINTS[i] for i in picked]


def test_power_cuts_during_a_migration_always_end_in_balena(rig):
    """A chain of power cuts across one migration (MIGOS_POWERCUTS of them, default all 20,
    spread over every state, the config injection and the MBR switch included); the device
    ends in balenaOS with the right config.json, and every boot in between was MIGOS (never
    a half-written disk, never the old OS once a run had written)."""
    cuts = int(os.environ.get("MIGOS_POWERCUTS", str(len(KILL_POINTS))))
    r = rig()
    outcomes = []
    switched = False
    for i, (arm, delay) in enumerate(kill_points(cuts)):
        m = r.boot("cut%02d" % i)
        try:
            first = m.expect(r"^MIGOS \S+ ready$|BALENA BOOTED|OLD OS BOOTED", timeout=180)
            assert "OLD OS" not in first.group(0), "the old OS booted during a migration: %s" % outcomes
            if "BALENA" in first.group(0):
                # only a cut at or after the MBR switch may leave balenaOS in place
                assert switched, "balenaOS booted before any cut reached the switch: %s" % outcomes
                outcomes.append((arm, "already balena"))
                continue
            # cut at the armed point, or at the first later state when a resumed run skips it
            hit = wait_for_cut(m, arm, first)
            if hit is True:
                time.sleep(delay)
                outcomes.append((arm, "cut"))
            else:
                outcomes.append((arm, "cut at " + hit))
        finally:
            m.kill()                           # the power cut
            switched = switched or any("state SWITCH" in l or '"SUCCESS"' in l for l in m.lines)
    final = r.boot("final")
    try:
        first = final.expect(r"^MIGOS \S+ ready$|BALENA BOOTED", timeout=180)
        if "BALENA" not in first.group(0):
            final.expect(r'"state": "SUCCESS"', timeout=600)
            assert final.wait_exit(120) == 0
    finally:
        final.kill()
    expect_balena(r)
    assert sum(1 for _, o in outcomes if o == "cut") >= len(outcomes) - 2, outcomes
    # the narrow windows were really hit: the config injection and the MBR switch
    assert ("state INJECT", "cut") in outcomes, outcomes
    assert ("state SWITCH", "cut") in outcomes, outcomes
    print("power cuts: %d boots, outcomes %s" % (r.boots, outcomes))
