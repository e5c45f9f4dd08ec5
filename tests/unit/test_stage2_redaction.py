"""Secrets never reach a log line: config.json keys and wifi passphrases (no root)."""

import io
import json

from migos import log
from migos.stage2 import migrate, sources


def capture(fn):
    buf = io.StringIO()
    old = log.LOG.console
    log.LOG.console = buf
    try:
        fn()
    finally:
        log.LOG.console = old
    return buf.getvalue()


def test_nm_passphrases_registered(tmp_path):
    p = tmp_path / "home-wifi"
    p.write_text("[connection]\nid=home\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=hunter2-long-psk\n")
    files = migrate.read_nm_files([str(p)])
    assert files[0][0] == "home-wifi"
    out = capture(lambda: log.event("OK", "connection file: %s" % files[0][1].decode()))
    assert "hunter2-long-psk" not in out
    assert log.REDACTED in out


def test_api_keys_and_config_dump_redacted():
    from migos import config
    cfg = config.parse(json.dumps({"deviceType": "raspberrypi3", "apiEndpoint": "https://x",
                                   "applicationId": 1, "apiKey": "PROVISIONING-KEY-123",
                                   "deviceApiKey": "DEVICE-KEY-456"}))
    log.add_secret(cfg.data["apiKey"])
    log.add_secret(cfg.data["deviceApiKey"])
    out = capture(lambda: (log.event("OK", "cfg", config=cfg.data),
                           log.event("ERROR", "Authorization: Bearer DEVICE-KEY-456 rejected")))
    assert "PROVISIONING-KEY-123" not in out and "DEVICE-KEY-456" not in out


def test_url_description_has_no_query_or_credentials():
    assert sources._safe_url("https://user:pw@host:8443/img.gz?token=abc") == \
        "https://host:8443/img.gz"


def test_release_filter_names_slug_and_quotes():
    f = sources.release_filter("raspberry'pi")
    assert "dt/slug eq 'raspberry''pi'" in f
    url = sources.releases_url("https://api.example", "raspberrypi3")
    assert url.startswith("https://api.example/v6/release?$select=raw_version&$filter=")
    assert "$orderby=created_at%20desc" in url
