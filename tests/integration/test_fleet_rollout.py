"""A 50-device rollout over a real mosquitto on 127.0.0.1: 50 agents run in this process as
threads (each with its own MQTT connection, signature checks and nonce store) with fake
command runners that sleep and succeed or fail; the operator side is the real
RolloutRunner. The runners themselves measure how many run at once."""

import random
import threading
import time

import pytest

from migos.fleet import signing
from migos.fleet.mqtt import BrokerOptions
from migos.fleet.operator import RolloutRunner
from migos.fleet.rollout import Rollout
from tests.mqtt_broker import broker  # noqa: F401
from tests.integration.test_fleet_agent import FLEET, agent_for

N_DEVICES = 50


class Fleet:
    def __init__(self, failing):
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.ran = []
        self.failing = set(failing)

    def runner(self, device):
        def run(cmd, args, progress):
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
                self.ran.append(device)
            try:
                progress("migrating %s" % device)
                # failures come fast, so the stop is reached while others still run
                time.sleep(0.01 if device in self.failing else random.uniform(0.05, 0.25))
                return 3 if device in self.failing else 0
            finally:
                with self.lock:
                    self.running -= 1
        return run


class CheckedRollout(Rollout):
    """Records, at every start, how many failures the operator knew of."""

    def started(self, device, now=0.0):
        self.failures_at_start = getattr(self, "failures_at_start", []) + [self.count("failed")]
        Rollout.started(self, device, now)


@pytest.fixture
def fleet_key():
    return bytes.fromhex(signing.new_fleet_key())


def run_rollout(tmp_path, broker, fleet_key, failing, max_parallel, max_failures):
    devices = ["pi-%02d" % i for i in range(N_DEVICES)]
    sim = Fleet(failing)
    agents = [agent_for(tmp_path, broker.port, fleet_key, device=d, runner=sim.runner(d))
              for d in devices]
    try:
        for a in agents:
            a.start(wait=0)
        deadline = time.monotonic() + 20
        while not all(a.conn.connected.is_set() for a in agents):
            assert time.monotonic() < deadline, "agents did not connect"
            time.sleep(0.05)
        time.sleep(0.3)
        plan = CheckedRollout(devices, max_parallel=max_parallel, max_failures=max_failures,
                              timeout=30)
        RolloutRunner(BrokerOptions(port=broker.port), FLEET, fleet_key, "init",
                      ["-c", "/boot/config.json", "-v", "2.50.1"], plan).run()
    finally:
        stoppers = [threading.Thread(target=a.stop) for a in agents]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(10)
    return plan, sim, devices


def test_rollout_50_devices_within_limits(tmp_path, broker, fleet_key):
    failing = {"pi-07", "pi-33"}
    plan, sim, devices = run_rollout(tmp_path, broker, fleet_key, failing, 5, 2)
    assert sim.peak <= 5, sim.peak
    assert sim.peak >= 2          # it did run devices in parallel
    assert sorted(sim.ran) == devices
    assert {d for d in devices if plan.state[d] == "failed"} == failing
    assert plan.count("ok") == N_DEVICES - 2 and plan.count("skipped") == 0


def test_rollout_stops_after_too_many_failures(tmp_path, broker, fleet_key):
    failing = {"pi-%02d" % i for i in (3, 4, 5, 6, 20, 21)}
    plan, sim, devices = run_rollout(tmp_path, broker, fleet_key, failing, 4, 2)
    assert sim.peak <= 4
    failed = {d for d in devices if plan.state[d] == "failed"}
    assert len(failed) >= 3 and failed <= failing
    assert max(plan.failures_at_start) <= 2          # nothing started once 3 had failed
    assert len(plan.failures_at_start) == len(sim.ran)
    # no device was started after the third failure was known: with at most 4 in flight,
    # at most 3 more could have been running when it came in
    assert len(sim.ran) <= 7 + 3, sim.ran
    assert plan.count("skipped") == N_DEVICES - len(sim.ran)
    assert "pi-49" not in sim.ran
    assert "stopped: too many failures" in plan.table()
