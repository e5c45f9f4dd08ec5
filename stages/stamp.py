"""Stamps: small JSON files that stand for a directory tree in doit's dependency graph.

A step that produces a tree writes a stamp holding the tree's digest (every path, type,
mode, link target and content), so the next step reruns exactly when the tree changed,
whatever changed in it.
"""

import hashlib
import json
import os
import stat


def tree_digest(top):
    h = hashlib.sha256()
    for d, dirs, names in os.walk(top):
        dirs.sort()
        for n in sorted(dirs + names):
            p = os.path.join(d, n)
            st = os.lstat(p)
            h.update(("%s\0%o\0" % (os.path.relpath(p, top), st.st_mode)).encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            h.update(b"\n")
    return h.hexdigest()


def write(path, trees=(), **data):
    """Write ``data`` plus the digest of each tree in ``trees`` to ``path`` (atomically)."""
    data = dict(data, trees={os.path.basename(t): tree_digest(t) for t in trees})
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def read(path):
    with open(path) as f:
        return json.load(f)
