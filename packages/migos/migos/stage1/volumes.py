"""``--backup-cfg YAML``: files of the old OS to carry into balenaOS volumes (the format of
balena takeover's backup configuration)::

    - volume: "data"
      items:
        - source: /home/pi/app/data
          target: "app-data"          # optional, default: the source's name
          filter: 'log-.*'            # optional regex on file names under a directory

The result is one tar.gz (``migos/backup.tgz`` on the boot partition) holding
``VOLUME/TARGET/...``; the MIGOS runtime unpacks it into the volumes.

Only this subset of YAML is read (lists of mappings of scalars, '#' comments, plain,
single- or double-quoted scalars); anything else is a one-line error.
"""

import io
import os
import re
import tarfile

from ..errors import UsageError


def _scalar(text, where):
    text = text.strip()
    if not text:
        return ""
    if text[0] == '"':
        if not text.endswith('"') or len(text) < 2:
            raise UsageError("%s: unterminated double-quoted value" % where, "fix the YAML")
        return bytes(text[1:-1], "utf-8").decode("unicode_escape")
    if text[0] == "'":
        if not text.endswith("'") or len(text) < 2:
            raise UsageError("%s: unterminated single-quoted value" % where, "fix the YAML")
        return text[1:-1].replace("''", "'")
    return re.sub(r"\s+#.*$", "", text)


def parse(text, path="backup-cfg"):
    """[{"volume": str, "items": [{"source", "target", "filter"}]}]."""
    volumes = []
    item = None
    vol = None
    for n, raw in enumerate(text.splitlines(), 1):
        where = "%s:%d" % (path, n)
        if not raw.strip() or raw.strip().startswith("#") or raw.strip() == "---":
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        line = raw.strip()
        dash = line.startswith("- ")
        if dash:
            line = line[2:].strip()
        m = re.match(r"^([A-Za-z_]+):\s*(.*)$", line)
        if not m:
            raise UsageError("%s: cannot read %r" % (where, raw.strip()), "fix the YAML")
        key, value = m.group(1), m.group(2)
        if key == "volume":
            if not dash or indent != 0:
                raise UsageError("%s: a volume must start a top-level list item" % where,
                                 "fix the YAML")
            vol = {"volume": _scalar(value, where), "items": []}
            volumes.append(vol)
            item = None
        elif key == "items":
            if vol is None or value.strip():
                raise UsageError("%s: items: belongs under a volume" % where, "fix the YAML")
        elif key in ("source", "target", "filter"):
            if vol is None:
                raise UsageError("%s: %s outside a volume" % (where, key), "fix the YAML")
            if dash or item is None:
                item = {}
                vol["items"].append(item)
            item[key] = _scalar(value, where)
        else:
            raise UsageError("%s: unknown key %r" % (where, key), "use volume, items, source, "
                             "target, filter")
    for v in volumes:
        if not v["volume"]:
            raise UsageError("%s: a volume without a name" % path, "fix the YAML")
        for it in v["items"]:
            if not it.get("source"):
                raise UsageError("%s: an item of volume %s has no source" % (path, v["volume"]),
                                 "fix the YAML")
            if it.get("filter"):
                try:
                    re.compile(it["filter"])
                except re.error as e:
                    raise UsageError("%s: filter %r is not a regular expression (%s)"
                                     % (path, it["filter"], e), "fix the YAML")
    return volumes


def make_archive(cfg_path, root="/"):
    """The tar.gz bytes of everything the backup configuration names."""
    try:
        with open(cfg_path, encoding="utf-8") as f:
            volumes = parse(f.read(), cfg_path)
    except OSError as e:
        raise UsageError("cannot read %s (%s)" % (cfg_path, e.strerror), "give a YAML file")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for v in volumes:
            for it in v["items"]:
                src = os.path.join(root, it["source"].lstrip("/"))
                if not os.path.exists(src):
                    raise UsageError("backup source %s does not exist" % it["source"],
                                     "fix --backup-cfg")
                target = it.get("target") or os.path.basename(it["source"].rstrip("/"))
                base = "%s/%s" % (v["volume"], target)
                if os.path.isfile(src):
                    tar.add(src, arcname=base, recursive=False)
                    continue
                pattern = re.compile(it["filter"]) if it.get("filter") else None
                for dirpath, dirnames, filenames in os.walk(src):
                    dirnames.sort()
                    for name in sorted(filenames):
                        if pattern and not pattern.search(name):
                            continue
                        full = os.path.join(dirpath, name)
                        tar.add(full, arcname=base + "/" + os.path.relpath(full, src),
                                recursive=False)
    return buf.getvalue()
