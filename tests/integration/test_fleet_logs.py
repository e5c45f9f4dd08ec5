"""Remote logs: the on-disk spool survives a broker outage and a restart of the shipper
(nothing lost, nothing invented), HTTP retries, the bound, torn lines, the full-log upload."""

import http.server
import json
import os
import threading
import time

from migos import log
from migos.fleet import logship
from migos.fleet.mqtt import BrokerOptions, Connection
from tests.mqtt_broker import Broker
from tests.integration.test_fleet_agent import Listener

TOPIC = "migos/f/dev/status"


def wait(pred, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def shipper_on(port, spool):
    conn = Connection(BrokerOptions(port=port), "shipper-%s" % os.urandom(3).hex())
    conn.start(wait=3)
    sh = logship.Shipper(spool, [logship.MqttTransport(conn, TOPIC, timeout=2)], batch=7,
                         interval=0.1, max_backoff=0.3)
    return conn, sh.start()


def test_spool_survives_outage_and_restart(tmp_path):
    b = Broker(str(tmp_path)).start()
    spool = str(tmp_path / "spool")
    listen = Listener(b.port, TOPIC)
    got = []

    def drain():
        while not listen.q.empty():
            got.extend(listen.q.get()["events"])
        return got
    conn, sh = shipper_on(b.port, spool)
    try:
        for i in range(10):
            sh.enqueue({"n": i, "msg": "before outage"})
        assert wait(lambda: len(drain()) >= 10)
        b.stop()
        assert wait(lambda: not conn.connected.is_set())
        for i in range(10, 30):
            sh.enqueue({"n": i, "msg": "during outage"})
        time.sleep(0.5)
        assert sh.pending() == 20 and sh.failures > 0
    finally:
        sh.stop(drain_timeout=0.2)           # the "agent" goes away with 20 events unsent
        conn.stop()
    assert logship.Spool(spool).peek(100)[0][0]["n"] == 10      # they are on disk
    b.start()                                                      # same port
    assert wait(lambda: listen.conn.connected.is_set())            # the collector is back
    time.sleep(0.3)
    conn, sh = shipper_on(b.port, spool)                           # a new process, same spool
    try:
        for i in range(30, 35):
            sh.enqueue({"n": i, "msg": "after restart"})
        assert wait(lambda: len(drain()) >= 35), (sorted(e["n"] for e in got), sh.pending(), sh.last_error, sh.sent, listen.conn.connected.is_set(), conn.connected.is_set())
        time.sleep(0.3)
        drain()
        assert sorted(e["n"] for e in got) == list(range(35))       # all, once each
        assert len({e["qid"] for e in got}) == 35
        assert sh.pending() == 0
    finally:
        sh.stop()
        conn.stop()
        listen.conn.stop()
        b.stop()


def test_logger_hook_ships_redacted_events(tmp_path):
    b = Broker(str(tmp_path)).start()
    listen = Listener(b.port, TOPIC)
    conn, sh = shipper_on(b.port, str(tmp_path / "spool"))
    sh.install()
    secret = "hunter2-%s" % os.urandom(4).hex()
    log.add_secret(secret)
    try:
        log.event("OK", "wifi psk is %s" % secret, apiKey="abc")
        ev = listen.wait_for(lambda m: True)["events"][0]
        assert ev["state"] == "OK" and secret not in json.dumps(ev) and ev["apiKey"] == "<redacted>"
        assert {"device", "script", "function", "line", "uptime", "ts"} <= set(ev)
    finally:
        sh.stop()
        conn.stop()
        listen.conn.stop()
        b.stop()
    assert log.LOG.http is None


class _Sink(http.server.BaseHTTPRequestHandler):
    fail_first = 0
    bodies = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Sink.fail_first > 0:
            _Sink.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Sink.bodies.append((self.path, self.headers["Content-Type"], body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_http_retry_and_full_log(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d" % srv.server_address[1]
    _Sink.fail_first, _Sink.bodies = 3, []
    sh = logship.Shipper(str(tmp_path / "spool"), [logship.HttpTransport(url + "/events")],
                         batch=4, interval=0.05, max_backoff=0.1).start()
    try:
        for i in range(10):
            sh.enqueue({"n": i})
        assert wait(lambda: sum(len(json.loads(b)) for _, _, b in _Sink.bodies) >= 10)
        assert sh.failures >= 3
        sent = [e["n"] for _, _, b in _Sink.bodies for e in json.loads(b)]
        assert sent == list(range(10))
        assert all(len(json.loads(b)) <= 4 for _, _, b in _Sink.bodies)     # batches
    finally:
        sh.stop()
    _Sink.fail_first, _Sink.bodies = 1, []
    lines = [json.dumps({"n": i}) for i in range(1000)]
    assert logship.upload_full_log(lines, http_url=url + "/full", delay=0.01)
    (path, ctype, body), = _Sink.bodies
    assert path == "/full" and ctype == "application/x-ndjson"
    assert body.decode().splitlines() == lines
    srv.shutdown()


def test_bound_and_torn_line(tmp_path, monkeypatch):
    monkeypatch.setattr(logship, "SEGMENT_BYTES", 1000)
    sp = logship.Spool(str(tmp_path / "s"), max_bytes=5000)
    for i in range(300):
        sp.append({"n": i, "pad": "x" * 40})
    assert sp.size() <= 5000 + 1000
    events, _ = sp.peek(1000)
    assert sp.dropped > 0 and sp.dropped + len(events) == 300
    assert events[-1]["n"] == 299 and [e["n"] for e in events] == list(range(300 - len(events), 300))
    sp.close()
    last = os.path.join(sp.path, "seg-%012d.jsonl" % sp.segments()[-1])
    with open(last, "ab") as f:
        f.write(b'{"n": 300, "torn')                         # a crash mid-append
    sp2 = logship.Spool(sp.path, max_bytes=5000)
    sp2.append({"n": 301})
    assert [e["n"] for e in sp2.peek(1000)[0]][-2:] == [299, 301]


def test_stage1_command_ships_to_http_from_env(tmp_path):
    """Any migos command ships its events to $MIGOS_LOG_HTTP; when the endpoint is down they
    stay in the spool and go out with the next command."""
    import subprocess
    import sys
    from tests.conftest import MIGOS_PKG
    from tests.mqtt_broker import free_port

    def backup(url):
        env = dict(os.environ, PYTHONPATH=MIGOS_PKG, MIGOS_LOG_HTTP=url,
                   MIGOS_LOG_SPOOL=str(tmp_path / "spool"))
        return subprocess.run([sys.executable, "-m", "migos", "backup", "--root",
                               str(tmp_path / "nothing"), "--out", str(tmp_path / "out"),
                               "--pretend"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    proc = backup("http://127.0.0.1:%d/ev" % free_port())          # nobody listens there
    spooled = logship.Spool(str(tmp_path / "spool")).peek(1000)[0]
    assert spooled, proc.stderr
    _Sink.fail_first, _Sink.bodies = 0, []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    backup("http://127.0.0.1:%d/ev" % srv.server_address[1])
    sent = [e for _, _, b in _Sink.bodies for e in json.loads(b)]
    assert [e["qid"] for e in spooled] == [e["qid"] for e in sent[:len(spooled)]]
    assert len(sent) > len(spooled)
    assert logship.Spool(str(tmp_path / "spool")).peek(10)[0] == []
    srv.shutdown()
