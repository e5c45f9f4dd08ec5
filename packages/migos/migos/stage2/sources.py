"""Where the image bytes come from: a local file, an http(s) URL, or the balena API.

Every source is a file-like object with ``read(n)`` (compressed bytes, ``b""`` at the end),
``sent`` (bytes received) and ``describe()`` (a log-safe name).

HTTP: TLS certificates are verified (the system's default context), the status is checked,
and a connection that drops mid-body is reopened with ``Range: bytes=<offset>-`` (and
``If-Range`` with the ETag/Last-Modified when the server gave one) at the byte where the stream
stopped.  A server answering 200 instead of 206 is read from the start and the bytes already
seen are skipped.  Up to ``retries`` consecutive failures without progress are retried with
exponential backoff (base ``MIGOS_HTTP_BACKOFF`` seconds, default 1; the environment variable
exists for the test-suite).

balena API (no ``--image``): ``GET {apiEndpoint}/v6/release`` lists the device type's final
host-OS releases (``raw_version``), :mod:`versions` picks one, ``POST {apiEndpoint}/download``
with ``{"deviceType", "version", "fileType": ".gz"}`` and ``Authorization: Bearer <key>``
returns the gzip image.
"""

import json
import os
import socket
import ssl
import time

import http.client as httplib
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit
from urllib.request import Request, build_opener, HTTPSHandler, HTTPRedirectHandler

from .. import log
from ..errors import UsageError
from . import versions

USER_AGENT = "migos-migrate"


class SourceError(UsageError):
    """The image cannot be fetched (exit 2 when raised before the first write)."""


class SourceUnreachable(SourceError):
    """The image server could not be reached or the download never completed: nothing was
    written, but unlike bad input this may pass (exit 3: try again later)."""

    exit_code = 3


class FileSource(object):
    def __init__(self, path):
        self.path = path
        try:
            self.f = open(path, "rb", buffering=0)
        except OSError as e:
            raise SourceError("cannot open image %s (%s)" % (path, e.strerror),
                              "check the --image path")
        self.size = os.fstat(self.f.fileno()).st_size
        self.sent = 0

    def read(self, n):
        b = self.f.read(n)
        self.sent += len(b)
        return b

    def describe(self):
        return self.path

    def reopen(self):
        """A second, independent reader of the same bytes (for the verify-first pass)."""
        return FileSource(self.path)

    def close(self):
        self.f.close()


class MemorySource(object):
    """The whole compressed image, downloaded into RAM (an anonymous mmap) before the first
    write: after that the network no longer matters, and the bytes can be checked in full."""

    def __init__(self, buf, name):
        self.buf = buf
        self.name = name
        self.total = len(buf)
        self.pos = 0
        self.sent = 0

    def read(self, n):
        b = self.buf[self.pos:self.pos + n]
        self.pos += len(b)
        self.sent += len(b)
        return b

    def describe(self):
        return self.name

    def reopen(self):
        return MemorySource(self.buf, self.name)

    def close(self):
        pass                      # the mapping is shared with reopened readers; GC frees it


def ram_budget(meminfo="/proc/meminfo", reserve=192 << 20):
    """Bytes of RAM an image may take when staged: MemAvailable minus ``reserve`` (the image
    head, buffers, Python), or 0 when unknown. ``MIGOS_RAM_BUDGET_MIB`` caps it (0: never
    stage, always stream)."""
    budget = 0
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    budget = max(0, int(line.split()[1]) * 1024 - reserve)
    except (OSError, ValueError, IndexError):
        pass
    cap = os.environ.get("MIGOS_RAM_BUDGET_MIB", "").strip()
    return min(budget, int(cap) << 20) if cap.isdigit() else budget


def stage_in_ram(src, progress=None):
    """Read all of ``src`` (whose ``total`` is known) into RAM; return a MemorySource."""
    import mmap
    buf = mmap.mmap(-1, src.total)
    view = memoryview(buf)
    pos = 0
    while pos < src.total:
        b = src.read(min(1 << 20, src.total - pos))
        if not b:
            break
        view[pos:pos + len(b)] = b
        pos += len(b)
        if progress is not None:
            progress(len(b))
    view.release()
    if pos != src.total:
        buf.close()
        raise SourceUnreachable("%s: the download ended at byte %d of %d" % (
            getattr(src, "what", "image download"), pos, src.total), "try again later")
    src.close()
    return MemorySource(buf, src.describe())


def _backoff_base():
    try:
        return float(os.environ.get("MIGOS_HTTP_BACKOFF", "1"))
    except ValueError:
        return 1.0


def _status_error(code, what, url_desc):
    if code in (401, 403):
        return SourceError("%s: HTTP %d, access denied by %s" % (what, code, url_desc),
                           "check the apiKey/deviceApiKey in config.json (or the URL's access)")
    if code == 404:
        return SourceError("%s: HTTP 404, not found at %s" % (what, url_desc),
                           "check --image / --version and the device type")
    return SourceError("%s: HTTP %d from %s" % (what, code, url_desc),
                       "try again later or use another image source")


def _opener():
    ctx = ssl.create_default_context()
    return build_opener(HTTPSHandler(context=ctx), HTTPRedirectHandler())


def _safe_url(url):
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host += ":%d" % p.port
    return "%s://%s%s" % (p.scheme, host, p.path)


class HttpSource(object):
    """A resumable HTTP(S) body."""

    def __init__(self, url, method="GET", body=None, headers=None, retries=6, timeout=30,
                 what="image download"):
        if not url.startswith(("http://", "https://")):
            raise SourceError("%r is not an http(s) URL" % url)
        self.url = url
        self.method = method
        self.body = body
        self.headers = dict(headers or {})
        self.headers.setdefault("User-Agent", USER_AGENT)
        self.retries = retries
        self.timeout = timeout
        self.what = what
        self.pos = 0            # body bytes delivered to the caller
        self.sent = 0           # body bytes received from the network (incl. skipped ones)
        self.total = None
        self.validator = None
        self.resp = None
        self.reconnects = 0
        self.opener = _opener()
        self._connect(first=True)

    def describe(self):
        return _safe_url(self.url)

    def reopen(self):
        """The same request again, from byte 0 (for the verify-first pass)."""
        return HttpSource(self.url, self.method, self.body, self.headers, self.retries,
                          self.timeout, self.what)

    def _request(self):
        headers = dict(self.headers)
        if self.pos:
            headers["Range"] = "bytes=%d-" % self.pos
            if self.validator:
                headers["If-Range"] = self.validator
        req = Request(self.url, data=self.body, headers=headers, method=self.method)
        return self.opener.open(req, timeout=self.timeout)

    def _connect(self, first=False):
        failures = 0
        delay = _backoff_base()
        while True:
            try:
                resp = self._request()
                code = resp.getcode()
                if code not in (200, 206):
                    raise _status_error(code, self.what, self.describe())
                break
            except HTTPError as e:
                if e.code < 500 and e.code != 429:
                    raise _status_error(e.code, self.what, self.describe())
                status = _status_error(e.code, self.what, self.describe())
                err = SourceUnreachable(status.problem, status.fix)
            except SourceError:
                raise
            except (URLError, OSError, httplib.HTTPException) as e:
                reason = getattr(e, "reason", e)
                err = SourceUnreachable("%s: cannot reach %s (%s)" % (
                    self.what, self.describe(), reason), "check the URL and the network")
            failures += 1
            if failures > self.retries:
                raise err
            log.event("ERROR", "%s; retry %d/%d in %.1fs" % (err.problem, failures, self.retries,
                                                              delay), level="warn")
            time.sleep(delay)
            delay = min(delay * 2, 30)
        if self.pos and code == 206:
            cr = resp.headers.get("Content-Range", "")
            try:
                start = int(cr.split()[1].split("-")[0])
            except (IndexError, ValueError):
                start = -1
            if start != self.pos:
                resp.close()
                raise SourceError("%s: the server resumed at the wrong offset (%s)" % (
                    self.what, cr), "try again")
        elif self.pos and code == 200:
            log.event("ERROR", "server ignored Range; re-reading %d bytes" % self.pos, level="warn")
            skip = self.pos
            while skip:
                b = resp.read(min(skip, 1 << 20))
                if not b:
                    raise SourceError("%s: connection lost while skipping" % self.what)
                self.sent += len(b)
                skip -= len(b)
        if first or self.total is None:
            length = resp.headers.get("Content-Length")
            if code == 200 and length and length.isdigit():
                self.total = int(length)
            self.validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        self.resp = resp

    def read(self, n):
        failures = 0
        while True:
            if self.total is not None and self.pos >= self.total:
                return b""
            try:
                b = self.resp.read(n)
            except (OSError, httplib.HTTPException, socket.timeout) as e:
                b = None
                reason = e
            if b:
                self.pos += len(b)
                self.sent += len(b)
                return b
            if b is not None and self.total is None:
                return b""   # no length known: a clean end is the end
            failures += 1
            if failures > self.retries:
                raise SourceUnreachable("%s: connection lost at byte %d and not recovered" % (
                    self.what, self.pos), "check the network and run the same command again")
            self.reconnects += 1
            log.event("ERROR", "%s: connection dropped at byte %d (%s); resuming" % (
                self.what, self.pos, "short body" if b is not None else reason), level="warn")
            try:
                self.resp.close()
            except Exception:
                pass
            time.sleep(min(_backoff_base() * (2 ** (failures - 1)), 30) if failures > 1 else 0)
            self._connect()

    def close(self):
        if self.resp is not None:
            self.resp.close()


def open_url_or_file(src):
    if src.startswith(("http://", "https://")):
        return HttpSource(src)
    if "://" in src:
        raise SourceError("unsupported image URL scheme in %r" % src, "use a path or http(s) URL")
    return FileSource(src)


# balena API ----------------------------------------------------------------------------------

def release_filter(slug):
    q = "'" + slug.replace("'", "''") + "'"
    return ("(is_final eq true) and (is_passing_tests eq true) and (is_invalidated eq false) and "
            "(status eq 'success') and (belongs_to__application/any(bta:(bta/is_host eq true) and "
            "(bta/is_for__device_type/any(dt:dt/slug eq %s)) and "
            "(not(bta/application_tag/any(at:at/tag_key eq 'release-policy')) or "
            "bta/application_tag/any(at:(at/tag_key eq 'release-policy') and "
            "(at/value eq 'default')))))" % q)


def releases_url(api, slug):
    safe = "()/:',$=*"
    return "%s/v6/release?$select=raw_version&$filter=%s&$orderby=%s" % (
        api.rstrip("/"), quote(release_filter(slug), safe=safe), quote("created_at desc"))


def api_versions(api, slug, key, timeout=30):
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if key:
        headers["Authorization"] = "Bearer " + key
    src = HttpSource(releases_url(api, slug), headers=headers, timeout=timeout,
                     what="balena API release list")
    chunks = []
    while True:
        b = src.read(1 << 16)
        if not b:
            break
        chunks.append(b)
        if sum(len(c) for c in chunks) > 16 << 20:
            raise SourceError("balena API release list is unreasonably large")
    try:
        data = json.loads(b"".join(chunks).decode("utf-8"))
        return [r["raw_version"] for r in data["d"] if r.get("raw_version")]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SourceError("balena API release list is not the expected JSON",
                          "check apiEndpoint in config.json")


def api_image(cfg, version_spec):
    """(version, HttpSource) for the balenaOS image of config.json's device type."""
    log.add_secret(cfg.data.get("apiKey"))
    log.add_secret(cfg.data.get("deviceApiKey"))
    avail = api_versions(cfg.api_endpoint, cfg.device_type, cfg.api_key)
    try:
        version = versions.resolve(version_spec, avail)
    except versions.VersionError as e:
        raise SourceError(str(e), "pick a version offered for %s" % cfg.device_type)
    log.info("resolved balenaOS version %s for %s" % (version, cfg.device_type),
             version=version, requested=version_spec or "latest")
    body = json.dumps({"deviceType": cfg.device_type, "version": version,
                       "fileType": ".gz"}).encode("utf-8")
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + cfg.api_key}
    src = HttpSource(cfg.api_endpoint + "/download", method="POST", body=body, headers=headers,
                     what="balena API image download")
    return version, src
