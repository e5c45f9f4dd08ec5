"""balenaOS config.json: load and validate in one place (stage 1 and stage 2 share it)."""

import json

from .errors import UsageError

REQUIRED = ("deviceType", "apiEndpoint", "applicationId")
# One of these authenticates the device to the balena API (provisioning key or device key).
AUTH_KEYS = ("apiKey", "deviceApiKey")


class BalenaConfig:
    """A validated config.json. ``data`` keeps every key, unknown ones included."""

    def __init__(self, data, path="config.json"):
        self.data = data
        self.path = path

    @property
    def device_type(self):
        return self.data["deviceType"]

    @property
    def api_endpoint(self):
        return self.data["apiEndpoint"].rstrip("/")

    @property
    def api_key(self):
        return self.data.get("deviceApiKey") or self.data.get("apiKey")

    @property
    def uuid(self):
        return self.data.get("uuid")

    def to_json(self, hostname=None):
        data = dict(self.data)
        if hostname:
            data["hostname"] = hostname
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def parse(text, path="config.json"):
    """Validate config.json text; raise :class:`UsageError` naming the problem."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UsageError("%s is not valid JSON (%s)" % (path, e),
                         "download config.json again from the balena dashboard")
    if not isinstance(data, dict):
        raise UsageError("%s must hold a JSON object" % path,
                         "download config.json again from the balena dashboard")
    missing = [k for k in REQUIRED if not data.get(k)]
    if not any(data.get(k) for k in AUTH_KEYS):
        missing.append("apiKey or deviceApiKey")
    if missing:
        raise UsageError("%s lacks %s" % (path, ", ".join(missing)),
                         "download a complete config.json for this fleet from the balena dashboard")
    for key in ("deviceType", "apiEndpoint"):
        if not isinstance(data[key], str):
            raise UsageError("%s: %s must be a string" % (path, key), "fix config.json")
    if not data["apiEndpoint"].startswith(("http://", "https://")):
        raise UsageError("%s: apiEndpoint %r is not an http(s) URL" % (path, data["apiEndpoint"]),
                         "fix config.json")
    return BalenaConfig(data, path)


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UsageError("cannot read %s (%s)" % (path, e.strerror),
                         "pass the path of the fleet's config.json with -c")
    return parse(text, path)
