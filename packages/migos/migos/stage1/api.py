"""The balena API as stage 1 needs it: /ping, the VPN port, balenaOS versions, the image
download (with HTTP Range resume), and version ranges (``~x.y.z``, ``^x.y``).

A minimal downloader lives here because stage 2's was not available to stage 1 when this
was written; it streams to a file, checks the HTTP status, and resumes with ``Range``.
"""

import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from .. import log
from ..errors import MigosError, UsageError


class ApiError(MigosError):
    exit_code = 1


def ping(api_endpoint, timeout):
    """(ok, message) for GET {api}/ping (2xx with body OK)."""
    url = api_endpoint.rstrip("/") + "/ping"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read(64).decode("ascii", "replace").strip()
            if 200 <= r.status < 300 and body == "OK":
                return True, "%s answered OK" % url
            return False, "%s answered %d %r" % (url, r.status, body)
    except urllib.error.HTTPError as e:
        return False, "%s answered HTTP %d" % (url, e.code)
    except (urllib.error.URLError, OSError, socket.timeout) as e:
        reason = getattr(e, "reason", e)
        return False, "%s unreachable within %ss (%s)" % (url, timeout, reason)


def vpn_reachable(host, port, timeout):
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True, "TCP %s:%s reachable" % (host, port)
    except (OSError, ValueError) as e:
        return False, "TCP %s:%s unreachable within %ss (%s)" % (host, port, timeout, e)


# --- versions -----------------------------------------------------------------------------

_VER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:\+rev(\d+))?(?:\.(prod|dev))?$")


def parse_version(text):
    m = _VER.match(text.strip())
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4) or 0))


def check_version_spec(spec):
    """Raise UsageError unless ``spec`` is x.y.z[+revN], ~x.y[.z] or ^x[.y[.z]]."""
    if spec is None or spec in ("latest", "default"):
        return
    body = spec[1:] if spec[:1] in "~^" else spec
    if spec[:1] in "~^":
        if not re.match(r"^\d+(\.\d+){0,2}$", body):
            raise UsageError("version range %r is not ~x.y[.z] or ^x[.y[.z]]" % spec,
                             "e.g. -v ^2.80 or -v ~2.80.3")
    elif parse_version(body) is None:
        raise UsageError("version %r is not x.y.z or x.y.z+revN" % spec, "e.g. -v 5.1.20+rev1")


def matches(spec, version):
    """Does balenaOS ``version`` (x.y.z[+revN]) satisfy ``spec``?"""
    v = parse_version(version)
    if v is None:
        return False
    if spec in (None, "latest", "default"):
        return True
    if spec[:1] in "~^":
        parts = [int(x) for x in spec[1:].split(".")]
        low = tuple(parts + [0] * (3 - len(parts)))
        if v[:3] < low:
            return False
        if spec[0] == "~":
            # ~x.y.z and ~x.y: same x.y; ~x: same x
            return v[:2] == low[:2] if len(parts) >= 2 else v[0] == low[0]
        # ^x.y.z: same first non-zero component
        if low[0] != 0:
            return v[0] == low[0]
        if low[1] != 0:
            return v[:2] == low[:2]
        return v[:3] == low[:3]
    want = parse_version(spec)
    if "+rev" in spec:
        return v == want
    return v[:3] == want[:3]


def versions_url(api_endpoint, slug):
    slug_q = slug.replace("'", "''")
    flt = ("(is_final eq true) and (is_passing_tests eq true) and (is_invalidated eq false) and "
           "(status eq 'success') and (belongs_to__application/any(bta:((bta/is_host eq true) and "
           "(bta/is_for__device_type/any(iodt:iodt/slug eq '%s'))) and "
           "(not(bta/application_tag/any(at:at/tag_key eq 'release-policy')) or "
           "(bta/application_tag/any(at:(at/tag_key eq 'release-policy') and "
           "(at/value eq 'default'))))))" % slug_q)
    q = "$select=raw_version&$filter=%s&$orderby=%s" % (
        urllib.parse.quote(flt, safe="()/:',"), urllib.parse.quote("created_at desc"))
    return "%s/v6/release?%s" % (api_endpoint.rstrip("/"), q)


def _get_json(url, api_key, timeout):
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + api_key,
                                               "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise ApiError("the balena API answered HTTP %d for %s" % (e.code, url.split("?")[0]),
                       "check apiEndpoint and the API key in config.json")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ApiError("cannot ask the balena API for versions (%s)" % getattr(e, "reason", e),
                       "check the network, or pass -i IMAGE")


def resolve_version(api_endpoint, api_key, slug, spec, timeout=30):
    """The newest balenaOS release for ``slug`` matching ``spec`` (default: the latest)."""
    data = _get_json(versions_url(api_endpoint, slug), api_key, timeout)
    found = [d.get("raw_version") for d in data.get("d", []) if d.get("raw_version")]
    ok = [v for v in found if matches(spec, v)]
    if not ok:
        raise ApiError("no balenaOS release for %s matches %s (the API lists %d)"
                       % (slug, spec or "latest", len(found)), "choose another -v")
    ok.sort(key=parse_version, reverse=True)
    return ok[0]


# --- download with resume ----------------------------------------------------------------

def download(url, dest, data=None, headers=None, timeout=60, retries=5, progress=None):
    """Stream ``url`` to ``dest``; on a dropped connection resume with Range at the byte
    that arrived last. ``data`` (bytes) makes it a POST. Returns the size."""
    headers = dict(headers or {})
    part = dest + ".part"
    attempt = 0
    total = None
    while True:
        have = os.path.getsize(part) if os.path.exists(part) else 0
        h = dict(headers)
        if have:
            h["Range"] = "bytes=%d-" % have
        req = urllib.request.Request(url, data=data, headers=h,
                                     method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status = r.status
                if have and status == 200:
                    have = 0          # the server ignored Range: start over
                elif status == 206:
                    cr = r.headers.get("Content-Range", "")
                    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", cr)
                    if not m or int(m.group(1)) != have:
                        raise ApiError("bad Content-Range %r from %s" % (cr, url))
                    if m.group(2) != "*":
                        total = int(m.group(2))
                elif status != 200:
                    raise ApiError("HTTP %d for %s" % (status, url))
                if status == 200 and r.headers.get("Content-Length"):
                    total = int(r.headers["Content-Length"])
                with open(part, "ab" if have else "wb") as f:
                    while True:
                        chunk = r.read(1 << 16)
                        if not chunk:
                            break
                        f.write(chunk)
                        if progress:
                            progress(f.tell(), total)
                    f.flush()
                    os.fsync(f.fileno())
            size = os.path.getsize(part)
            if total is not None and size < total:
                raise ConnectionError("stream ended at %d of %d bytes" % (size, total))
            os.replace(part, dest)
            return size
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:
                os.replace(part, dest)
                return have
            raise ApiError("HTTP %d for %s" % (e.code, url.split("?")[0]),
                           "check the URL / API key")
        except (urllib.error.URLError, ConnectionError, OSError, socket.timeout) as e:
            if isinstance(e, ApiError):
                raise
            attempt += 1
            if attempt > retries:
                raise ApiError("download of %s failed after %d retries (%s)"
                               % (url.split("?")[0], retries, e), "check the network and retry")
            log.event("ERROR", "download interrupted (%s); resuming" % e, level="warn")
            time.sleep(min(2 ** attempt, 10) * 0.1)


def download_image(api_endpoint, api_key, slug, version, dest, timeout=60):
    body = json.dumps({"deviceType": slug, "version": version, "fileType": ".gz"}).encode()
    return download(api_endpoint.rstrip("/") + "/download", dest, data=body,
                    headers={"Authorization": "Bearer " + api_key,
                             "Content-Type": "application/json"}, timeout=timeout)
