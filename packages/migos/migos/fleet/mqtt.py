"""A thin, blocking wrapper over paho-mqtt 2.x (MQTT 3.1.1), shared by agent and operator.

paho-mqtt is pure Python. On a device it comes from the copy the build vendors next to
the ``migos`` package (top level ``paho`` in migos.pyz and in the image's
dist-packages, see stages/vendor.py); on the build host from the venv. It is imported
lazily so that the rest of ``migos`` never needs it.

Options (``BrokerOptions``): host, port, TLS (CA file, optional client certificate and
key), username and a password read from a file.
"""

import queue
import ssl
import threading
import time


def _paho():
    try:
        import paho.mqtt.client as client
    except ImportError:
        raise RuntimeError("paho-mqtt is not available (it is vendored into migos.pyz and "
                           "the MIGOS image; on a build host: pip install -r requirements.txt)")
    return client


class BrokerOptions:
    def __init__(self, host="127.0.0.1", port=1883, tls_ca=None, tls_cert=None, tls_key=None,
                 username=None, password=None, keepalive=30):
        self.host, self.port = host, int(port)
        self.tls_ca, self.tls_cert, self.tls_key = tls_ca, tls_cert, tls_key
        self.username, self.password = username, password
        self.keepalive = keepalive

    @classmethod
    def from_dict(cls, d, password=None):
        return cls(host=d.get("host", "127.0.0.1"), port=d.get("port", 1883),
                   tls_ca=d.get("tls_ca"), tls_cert=d.get("tls_cert"), tls_key=d.get("tls_key"),
                   username=d.get("username"), password=password,
                   keepalive=d.get("keepalive", 30))


class Connection:
    """One MQTT client with a network thread; ``on_message(topic, payload bytes)``."""

    def __init__(self, opts, client_id, on_message=None, will=None, clean_session=True,
                 on_connect=None):
        mqtt = _paho()
        self.opts = opts
        self.connected = threading.Event()
        self._on_message = on_message
        self._on_connect_cb = on_connect
        self._subs = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session, protocol=mqtt.MQTTv311)
        if opts.username:
            self.client.username_pw_set(opts.username, opts.password)
        if opts.tls_ca or opts.tls_cert:
            self.client.tls_set(ca_certs=opts.tls_ca, certfile=opts.tls_cert,
                                keyfile=opts.tls_key, cert_reqs=ssl.CERT_REQUIRED,
                                tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._connected
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._message
        self.refused = None

    def _connected(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            self.refused = str(reason_code)
            return
        for t in self._subs:
            client.subscribe(t, qos=1)
        self.connected.set()
        if self._on_connect_cb:
            self._on_connect_cb()

    def _message(self, client, userdata, msg):
        if self._on_message:
            self._on_message(msg.topic, msg.payload)

    def start(self, wait=10.0):
        """Connect in the background (retries for ever); wait up to ``wait`` s for it."""
        self.client.connect_async(self.opts.host, self.opts.port, keepalive=self.opts.keepalive)
        self.client.loop_start()
        return self.connected.wait(wait) if wait else False

    def subscribe(self, topic_name):
        self._subs.append(topic_name)
        if self.connected.is_set():
            self.client.subscribe(topic_name, qos=1)

    def publish(self, topic_name, payload, retain=False, qos=1, timeout=None):
        """Publish; with ``timeout`` wait for the broker's PUBACK and raise if none came."""
        info = self.client.publish(topic_name, payload, qos=qos, retain=retain)
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while not info.is_published():
                if time.monotonic() > deadline or info.rc not in (0,):
                    raise IOError("MQTT publish to %s not acknowledged" % topic_name)
                time.sleep(0.01)
        return info

    def stop(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def collect(opts, topic_name, seconds, client_id):
    """Every (topic, payload) received on ``topic_name`` within ``seconds`` (retained too)."""
    q = queue.Queue()
    conn = Connection(opts, client_id, on_message=lambda t, p: q.put((t, p)))
    conn.subscribe(topic_name)
    if not conn.start(wait=10):
        conn.stop()
        raise IOError("cannot connect to MQTT broker %s:%d" % (opts.host, opts.port))
    time.sleep(seconds)
    conn.stop()
    out = []
    while not q.empty():
        out.append(q.get())
    return out
