"""balenaOS version strings and ``--version`` resolution (pure code).

Versions look like ``2.50.1+rev1``, ``2.50.1+rev1.dev``, ``5.1.20`` (``.dev``/``.prod`` is the
old variant suffix).  A request is

* empty / ``latest``: the highest version offered;
* ``^X[.Y[.Z]]``: the highest version with the same major (caret; for major 0 the same minor);
* ``~X[.Y[.Z]]``: the highest with the same major and minor (tilde; ``~X`` = same major);
* anything else: exactly that version (``+revN`` and the variant suffix optional when the
  list holds a single match).

Ranges never pick a pre-release (``-something``) version.
"""

import re

_RE = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?"
                 r"(?:\+rev(\d+))?(?:\.(dev|prod))?$")


class VersionError(ValueError):
    pass


class Version(object):
    __slots__ = ("raw", "major", "minor", "patch", "pre", "rev", "variant", "parts")

    def __init__(self, raw):
        m = _RE.match(raw.strip())
        if not m:
            raise VersionError("%r is not a balenaOS version" % raw)
        self.raw = raw.strip()
        self.parts = sum(1 for g in m.group(1, 2, 3) if g is not None)
        self.major = int(m.group(1))
        self.minor = int(m.group(2) or 0)
        self.patch = int(m.group(3) or 0)
        self.pre = m.group(4)
        self.rev = int(m.group(5)) if m.group(5) else None
        self.variant = m.group(6)

    def key(self):
        # a pre-release sorts before its release; rev None sorts as rev 0
        return (self.major, self.minor, self.patch, self.pre is None, self.pre or "", self.rev or 0)

    def base(self):
        return (self.major, self.minor, self.patch)

    def __repr__(self):
        return "Version(%r)" % self.raw


def parse(raw):
    return Version(raw)


def _parse_all(available):
    out = []
    for raw in available:
        try:
            out.append(Version(raw))
        except (VersionError, AttributeError):
            continue
    return out


def in_range(v, op, lo):
    if v.pre is not None:
        return False
    if v.base() < lo.base():
        return False
    if op == "^":
        if lo.major > 0 or lo.parts == 1:
            return v.major == lo.major
        return v.major == 0 and v.minor == lo.minor
    if op == "~":
        if lo.parts == 1:
            return v.major == lo.major
        return v.major == lo.major and v.minor == lo.minor
    raise VersionError("unknown range operator %r" % op)


def resolve(spec, available):
    """The raw version string to download for ``spec`` among ``available`` raw versions."""
    versions = _parse_all(available)
    if not versions:
        raise VersionError("the balena API lists no balenaOS release for this device type")
    spec = (spec or "").strip()
    if spec in ("", "latest", "default"):
        finals = [v for v in versions if v.pre is None] or versions
        return max(finals, key=Version.key).raw
    if spec[0] in "^~":
        lo = Version(spec[1:])
        hits = [v for v in versions if in_range(v, spec[0], lo)]
        if not hits:
            raise VersionError("no balenaOS release matches %s (newest offered: %s)" % (
                spec, max(versions, key=Version.key).raw))
        return max(hits, key=Version.key).raw
    want = Version(spec)
    exact = [v for v in versions if v.raw == want.raw]
    if exact:
        return exact[0].raw
    same = [v for v in versions if v.base() == want.base() and v.pre == want.pre and
            (want.rev is None or (v.rev or 0) == want.rev) and
            (want.variant is None or v.variant in (None, want.variant))]
    if len(same) >= 1 and (want.rev is not None or len(same) == 1):
        best = max(same, key=Version.key)
        if want.variant and best.variant is None:
            return best.raw + "." + want.variant
        return best.raw
    raise VersionError("balenaOS %s is not offered for this device type" % spec)
