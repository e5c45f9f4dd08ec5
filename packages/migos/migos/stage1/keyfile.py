"""NetworkManager keyfiles: the connection model, the writer and a small reader.

A keyfile is a GLib key file (``[section]`` / ``key=value``). The writer follows the
rules NetworkManager's own keyfile writer follows:

* string values are GKeyFile-escaped: ``\\`` as ``\\\\``, newline ``\\n``, tab ``\\t``,
  carriage return ``\\r``, and a leading or trailing space as ``\\s``;
* an SSID made only of printable ASCII is written as a string with each ``;`` written
  ``\\;`` (NM reads it back as ``;``); any other SSID (UTF-8, control bytes, a backslash)
  is written in NM's byte-list form ``99;97;102;195;169;`` so every byte survives;
* one file per connection, names unique even on a case-insensitive FAT file system.
"""

import collections
import re
import uuid as uuidlib

from .. import log

NAMESPACE = uuidlib.UUID("6c0a2f0e-8f7c-4d3b-9b1e-6d2b7a0c4f11")
SECRET_KEYS = ("psk", "password", "wep-key0", "wep-key1", "wep-key2", "wep-key3",
               "private-key-password", "pin", "leap-password", "sae-password")


class Connection:
    """One NetworkManager connection to be written as a keyfile.

    ``settings`` maps section name -> ordered {key: text value} (already in keyfile
    syntax for the value types we write, except SSIDs, which are kept as bytes in
    ``ssid`` and rendered by :func:`render`). ``raw`` holds the verbatim text of an
    existing keyfile carried over unchanged.
    """

    def __init__(self, conn_id, conn_type, source, ssid=None, raw=None, uuid=None):
        self.id = conn_id
        self.type = conn_type        # "wifi", "ethernet", ...
        self.source = source         # "path:line" it came from
        self.ssid = ssid             # bytes for wifi connections
        self.raw = raw
        self.settings = collections.OrderedDict()
        self.uuid = uuid or str(uuidlib.uuid5(NAMESPACE, "%s|%s|%s" % (
            source, conn_id, (ssid or b"").hex())))
        self.filename = None
        self.notes = []              # lossy conversions worth telling the user

    def section(self, name):
        if name not in self.settings:
            self.settings[name] = collections.OrderedDict()
        return self.settings[name]

    def set(self, section, key, value):
        self.section(section)[key] = value
        if key in SECRET_KEYS:
            log.add_secret(value)

    def get(self, section, key, default=None):
        return self.settings.get(section, {}).get(key, default)

    @property
    def ssid_text(self):
        return ssid_display(self.ssid) if self.ssid is not None else None

    def summary(self):
        """A secret-free description, for reports."""
        d = {"id": self.id, "type": self.type, "file": self.filename, "source": self.source,
             "uuid": self.uuid}
        if self.ssid is not None:
            d["ssid"] = self.ssid_text
        if self.raw is None:
            sec = self.get("wifi-security", "key-mgmt")
            d["security"] = sec or ("open" if self.type == "wifi" else None)
            d["ipv4"] = self.get("ipv4", "method", "auto")
            if self.get("wifi", "hidden") == "true":
                d["hidden"] = True
            if self.get("connection", "autoconnect") == "false":
                d["autoconnect"] = False
            prio = self.get("connection", "autoconnect-priority")
            if prio is not None:
                d["priority"] = int(prio)
        else:
            d["verbatim"] = True
        if self.notes:
            d["notes"] = list(self.notes)
        return d


def ssid_display(ssid):
    """An SSID as text for ids and reports: UTF-8 where it is, control characters as '?'."""
    text = ssid.decode("utf-8", "replace")
    return "".join("?" if ord(ch) < 0x20 or ord(ch) == 0x7f else ch for ch in text)


# --- GKeyFile escaping --------------------------------------------------------------

def escape(value):
    """GKeyFile-escape a string value (as g_key_file_set_string does, plus a trailing space)."""
    out = []
    n = len(value)
    for i, ch in enumerate(value):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == " " and (i == 0 or i == n - 1):
            out.append("\\s")
        else:
            out.append(ch)
    return "".join(out)


def unescape(value):
    """Undo GKeyFile string escapes (unknown escapes are kept as written)."""
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            rep = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(nxt)
            if rep is not None:
                out.append(rep)
            else:
                out.append(ch + nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def ssid_value(ssid):
    """Keyfile text for an SSID (bytes): string form when safe, else the byte list."""
    if ssid and all(0x20 <= b < 0x7f for b in ssid) and b"\\" not in ssid \
            and not re.match(rb"^[0-9;]*$", ssid):
        text = ssid.decode("ascii").replace(";", "\\;")
        return escape(text)
    return "".join("%d;" % b for b in ssid)


def render(conn):
    """The keyfile text of ``conn``."""
    if conn.raw is not None:
        return conn.raw if conn.raw.endswith("\n") else conn.raw + "\n"
    lines = []
    for section, values in conn.settings.items():
        if lines:
            lines.append("")
        lines.append("[%s]" % section)
        for key, value in values.items():
            if section == "wifi" and key == "ssid":
                lines.append("ssid=" + ssid_value(value))
            elif isinstance(value, bool):
                lines.append("%s=%s" % (key, "true" if value else "false"))
            else:
                lines.append("%s=%s" % (key, escape(str(value))))
    return "\n".join(lines) + "\n"


def new_connection(conn_id, conn_type, source, ssid=None):
    """A connection with the [connection] section filled in and the [wifi] one started."""
    conn = Connection(conn_id, conn_type, source, ssid=ssid)
    conn.set("connection", "id", conn_id)
    conn.set("connection", "uuid", conn.uuid)
    conn.set("connection", "type", conn_type)
    if conn_type == "wifi":
        conn.set("wifi", "mode", "infrastructure")
        conn.set("wifi", "ssid", ssid)
    elif conn_type == "ethernet":
        conn.section("ethernet")
    return conn


def finish_ip(conn):
    """Make sure [ipv4] and [ipv6] come last with a method."""
    for fam in ("ipv4", "ipv6"):
        sec = conn.settings.pop(fam, collections.OrderedDict())
        if "method" not in sec:
            sec["method"] = "auto"
            sec.move_to_end("method", last=False)
        conn.settings[fam] = sec
    return conn


# --- file names -----------------------------------------------------------------------

def _slug(text):
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return s[:60] or "connection"


def assign_filenames(connections, taken=()):
    """Give every connection a unique ``*.nmconnection`` name (case-insensitively unique)."""
    used = {t.lower() for t in taken}
    for conn in connections:
        base = conn.filename[:-len(".nmconnection")] if conn.filename and \
            conn.filename.endswith(".nmconnection") else _slug(conn.id)
        base = _slug(base)
        name = base + ".nmconnection"
        n = 2
        while name.lower() in used:
            name = "%s-%d.nmconnection" % (base, n)
            n += 1
        used.add(name.lower())
        conn.filename = name
    return connections


def unique_ids(connections):
    """NM allows duplicate ids but users cannot tell them apart: suffix duplicates."""
    seen = {}
    for conn in connections:
        if conn.raw is not None:
            seen[conn.id] = seen.get(conn.id, 0) + 1
            continue
        count = seen.get(conn.id, 0)
        seen[conn.id] = count + 1
        if count:
            new = "%s (%d)" % (conn.id, count + 1)
            while new in seen:
                count += 1
                new = "%s (%d)" % (conn.id, count + 1)
            seen[new] = 1
            conn.id = new
            conn.set("connection", "id", new)
    return connections


# --- reading keyfiles (existing NetworkManager connections) -------------------------

def parse_keyfile(text):
    """Parse GKeyFile text: returns ({section: {key: raw value}}, [(lineno, problem)])."""
    sections = collections.OrderedDict()
    problems = []
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("[") and s.endswith("]"):
            current = sections.setdefault(s[1:-1], collections.OrderedDict())
            continue
        if "=" not in s or current is None:
            problems.append((n, "not a key=value line inside a [section]"))
            continue
        key, _, value = line.lstrip().partition("=")
        current[key.strip()] = value.lstrip(" ")
    return sections, problems


def decode_ssid(raw):
    """An SSID as NM's keyfile reader understands it: byte list or (escaped) string."""
    raw = raw.strip()
    if re.match(r"^(\d{1,3};)+\d{0,3}$", raw):
        nums = [int(x) for x in raw.split(";") if x != ""]
        if all(0 <= x <= 255 for x in nums):
            return bytes(nums)
    text = unescape(raw).replace("\\;", ";")
    return text.encode("utf-8")
