"""publish: copy dist/NAME to DEST with versioned names, SHA256SUMS, optional OpenPGP signature.

``doit publish dest=DIR [key=KEYID] [target=NAME] [src=DIR]`` (not part of ``doit build``).
dist/NAME's own SHA256SUMS is checked first; each artefact is copied under a temporary
name and renamed; then DEST/SHA256SUMS is rewritten over every published file in DEST
(so several targets can be published into one directory), and with ``key=`` signed as
DEST/SHA256SUMS.asc (``gpg --detach-sign --armor``; the keyring is gpg's usual one or
``$GNUPGHOME``) and the signature verified. No key, no signature (and no stale one).
"""

import json
import os
import re
import shutil
import subprocess

from .tools import BuildError

SUMS = "SHA256SUMS"
RENAMES = (  # dist name -> published name (NAME, VERSION filled in)
    ("migos-boot-{name}.tar.gz", "migos-boot-{name}-{version}.tar.gz"),
    ("migos.pyz", "migos-{name}-{version}.pyz"),
    ("initramfs.cpio.zst", "migos-initramfs-{name}-{version}.cpio.zst"),
    ("vmlinuz", "migos-vmlinuz-{name}-{version}"),
    ("manifest.json", "migos-manifest-{name}-{version}.json"),
)


def plan(name, version):
    """[(file in dist/NAME, published name)] (pure)."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]*$", version or ""):
        raise BuildError("version %r from manifest.json is not usable in a file name; "
                         "rebuild with doit build" % version)
    return [(a.format(name=name), b.format(name=name, version=version)) for a, b in RENAMES]


def sums_text(entries):
    """``sha256sum -c`` lines for [(name, sha256)], sorted by name (pure)."""
    return "".join("%s  %s\n" % (h, n) for n, h in sorted(entries))


def _sha256(path):
    from .dist import sha256
    return sha256(path)


def _check_dist(src, files):
    try:
        with open(os.path.join(src, SUMS)) as f:
            listed = dict((m.group(2), m.group(1)) for m in
                          (re.match(r"^([0-9a-f]{64})  (.+)$", l) for l in f.read().splitlines()) if m)
    except OSError:
        raise BuildError("%s has no SHA256SUMS; run doit build first" % src)
    for rel in files:
        path = os.path.join(src, rel)
        if not os.path.isfile(path):
            raise BuildError("%s is missing; run doit build first" % path)
        if listed.get(rel) != _sha256(path):
            raise BuildError("%s does not match dist SHA256SUMS; run doit build again" % path)


def sign(dest, key):
    sums, asc = os.path.join(dest, SUMS), os.path.join(dest, SUMS + ".asc")
    proc = subprocess.run(["gpg", "--batch", "--yes", "--pinentry-mode", "loopback",
                           "--local-user", key, "--armor", "--detach-sign", "--output",
                           asc + ".tmp", sums], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["gpg failed"])[-1]
        raise BuildError("signing with key %s failed (%s); check key= and GNUPGHOME" % (
            key, last))
    proc = subprocess.run(["gpg", "--batch", "--verify", asc + ".tmp", sums],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise BuildError("the new signature does not verify; check the signing key")
    os.rename(asc + ".tmp", asc)


def publish(src, dest, name, key=None):
    if not dest:
        raise BuildError("no destination; run doit publish dest=DIR")
    try:
        with open(os.path.join(src, "manifest.json")) as f:
            version = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        raise BuildError("%s/manifest.json missing or unreadable; run doit build first" % src)
    pairs = plan(name, version)
    _check_dist(src, [a for a, _ in pairs])
    os.makedirs(dest, exist_ok=True)
    for a, b in pairs:
        tmp = os.path.join(dest, "." + b + ".tmp")
        shutil.copyfile(os.path.join(src, a), tmp)
        os.rename(tmp, os.path.join(dest, b))
    published = [n for n in os.listdir(dest) if not n.startswith(".")
                 and n not in (SUMS, SUMS + ".asc") and os.path.isfile(os.path.join(dest, n))]
    text = sums_text([(n, _sha256(os.path.join(dest, n))) for n in published])
    with open(os.path.join(dest, "." + SUMS + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(dest, "." + SUMS + ".tmp"), os.path.join(dest, SUMS))
    asc = os.path.join(dest, SUMS + ".asc")
    if key:
        sign(dest, key)
    elif os.path.exists(asc):
        os.unlink(asc)          # a signature of an older SHA256SUMS would not verify
    return [b for _, b in pairs]


def tasks(ctx, dest=None, key=None, src=None):
    yield {
        "name": "publish",
        "doc": "copy dist/NAME to dest=DIR with versioned names, SHA256SUMS, signature (key=KEYID)",
        "actions": [(publish, [src or ctx.dist, dest, ctx.target.name, key])],
        "uptodate": [False],
        "verbosity": 1,
    }
