"""A local stand-in for the balena API and an image file server (127.0.0.1 only).

Speaks the endpoints ``migos migrate`` uses:

* ``GET /ping`` -> ``OK``
* ``GET /v6/release?$select=raw_version&$filter=...&$orderby=...`` -> ``{"d": [{"raw_version": ...}]}``
  for the device type slug named in the filter (``.../dt/slug eq 'SLUG'...``)
* ``POST /download`` with ``{"deviceType", "version", "fileType"}`` and
  ``Authorization: Bearer KEY`` -> the image file
* ``GET /files/NAME`` -> a static file
* ``POST /logs`` -> stored in ``logs`` (a remote log sink: event batches and full logs)

Downloads honour ``Range: bytes=N-`` (206 + Content-Range) and ``If-Range`` against the ETag.
Faults: ``drop_every`` closes each response after that many body bytes; ``rate`` limits each
response body to that many bytes per second; ``cut()`` takes "the network" down (responses in
flight are closed mid-body, new requests are closed unanswered) until ``restore()``; ``status`` maps a path
(``/download``, ``/v6/release``, ``/files/NAME``) to a forced HTTP status; ``fail_first`` answers
the first N requests of a path with 500.  ``sent`` counts body bytes per path.

    with BalenaApi(releases={"raspberrypi3": ["2.50.1+rev1"]},
                   images={("raspberrypi3", "2.50.1+rev1"): "/tmp/img.gz"},
                   api_key="KEY") as api:
        api.url  # http://127.0.0.1:PORT
"""

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import unquote, urlsplit


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class BalenaApi(object):
    def __init__(self, releases=None, images=None, files=None, api_key=None, drop_every=None,
                 status=None, fail_first=None, rate=None):
        self.releases = dict(releases or {})
        self.images = dict(images or {})
        self.files = dict(files or {})
        self.api_key = api_key
        self.drop_every = drop_every
        self.rate = rate
        self.down = threading.Event()
        self.status = dict(status or {})
        self.fail_first = dict(fail_first or {})
        self.sent = {}
        self.requests = []
        self.logs = []               # (content type, body) POSTed to /logs
        self.lock = threading.Lock()
        self.httpd = None

    # lifecycle -------------------------------------------------------------------------
    def start(self):
        api = self

        class Handler(_Handler):
            server_api = api
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self._url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        return self

    @property
    def url(self):
        return self._url

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def cut(self):
        self.down.set()

    def restore(self):
        self.down.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def total_sent(self, path=None):
        with self.lock:
            if path:
                return self.sent.get(path, 0)
            return sum(self.sent.values())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_api = None

    def log_message(self, fmt, *args):  # quiet
        pass

    def _plain(self, code, body=b"", ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _fault(self, path):
        api = self.server_api
        if api.down.is_set():           # no network: the request is never answered
            self.close_connection = True
            return True
        with api.lock:
            api.requests.append((self.command, self.path, self.headers.get("Range"),
                                 self.headers.get("Authorization")))
            if api.fail_first.get(path, 0) > 0:
                api.fail_first[path] -= 1
                code = 500
            else:
                code = api.status.get(path)
        if code:
            self._plain(code, b'{"error": "injected fault"}', "application/json")
            return True
        return False

    def _auth_ok(self):
        api = self.server_api
        if api.api_key is None:
            return True
        return self.headers.get("Authorization") == "Bearer " + api.api_key

    def do_GET(self):
        parts = urlsplit(self.path)
        path = parts.path
        if self._fault(path):
            return
        if path == "/ping":
            return self._plain(200, b"OK")
        if path == "/v6/release":
            query = unquote(parts.query)
            m = re.search(r"dt/slug eq '([^']*)'", query)
            if not m or "raw_version" not in query:
                return self._plain(400, b'{"error": "bad query"}', "application/json")
            rel = self.server_api.releases.get(m.group(1), [])
            body = json.dumps({"d": [{"raw_version": v} for v in rel]}).encode()
            return self._plain(200, body, "application/json")
        if path.startswith("/files/"):
            name = path[len("/files/"):]
            fpath = self.server_api.files.get(name)
            if not fpath:
                return self._plain(404, b"not found")
            return self._serve(path, fpath)
        return self._plain(404, b"not found")

    def do_POST(self):
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self._fault(path):
            return
        if path == "/logs":         # a log sink: event batches (JSON) and full logs (NDJSON)
            with self.server_api.lock:
                self.server_api.logs.append((self.headers.get("Content-Type"), body))
            return self._plain(200, b"stored")
        if path != "/download":
            return self._plain(404, b"not found")
        if not self._auth_ok():
            return self._plain(401, b"Unauthorized")
        try:
            req = json.loads(body.decode())
            key = (req["deviceType"], req["version"])
        except (ValueError, KeyError, TypeError):
            return self._plain(400, b"bad request")
        fpath = self.server_api.images.get(key)
        if not fpath:
            return self._plain(404, b"No such version for this device type")
        return self._serve(path, fpath)

    def _serve(self, path, fpath):
        api = self.server_api
        size = os.path.getsize(fpath)
        etag = '"%x-%x"' % (size, int(os.path.getmtime(fpath)))
        start = 0
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and (not if_range or if_range == etag):
            m = re.match(r"bytes=(\d+)-$", rng.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        budget = api.drop_every
        with open(fpath, "rb") as f:
            f.seek(start)
            while True:
                n = 64 * 1024
                if budget is not None:
                    n = min(n, budget)
                    if n <= 0:
                        break  # drop the connection mid-body
                if api.down.is_set():
                    break  # the network went down mid-body
                data = f.read(n)
                if not data:
                    break
                if api.rate:
                    time.sleep(len(data) / float(api.rate))
                try:
                    self.wfile.write(data)
                except OSError:
                    break
                with api.lock:
                    api.sent[path] = api.sent.get(path, 0) + len(data)
                if budget is not None:
                    budget -= len(data)
        try:
            self.wfile.flush()
        except OSError:
            pass
