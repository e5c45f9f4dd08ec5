"""fetch: resolve the target's packages with apt and download them into the cache.

apt runs on the host with a private configuration (its own Dir, the target's
architecture, one ``signed-by`` keyring per archive), so the host's apt state is
never touched. ``apt-get update --error-on=any`` makes a bad or missing signature,
a tampered index or an unreachable archive fatal; apt checks every .deb's hash
against the signed index before it lands in the cache.

Output: ``build/NAME/fetch/packages.json``: for the root set and the extract set,
every package's name, version, architecture and cached .deb path.
The cache (``build/cache/NAME/archives``) survives ``doit clean``.
"""

import json
import os
import re
import shutil

from .tools import BuildError, run

INST = re.compile(r"^Inst (\S+) \((\S+) .*\[(\S+)\]\)")


def apt_dirs(ctx):
    base = ctx.path("apt")
    return {
        "base": base,
        "conf": os.path.join(base, "apt.conf"),
        "sources": os.path.join(base, "sources.list"),
        "status": os.path.join(base, "status"),
        "archives": os.path.join(ctx.cache, "archives"),
        "lists": os.path.join(ctx.cache, "lists"),
    }


def sources_list(target, deb_src=False, keyrings=None):
    """The sources.list for the target's archives (pure); ``keyrings``: {archive name: path}."""
    lines = []
    for a in target.archives:
        keyring = (keyrings or {}).get(a.name, a.keyring_path())
        for kind in (("deb", "deb-src") if deb_src else ("deb",)):
            lines.append("%s [signed-by=%s] %s %s %s" % (
                kind, keyring, a.url, a.suite, " ".join(a.components)))
    return "\n".join(lines) + "\n"


def apt_config(target, dirs):
    """A private apt.conf (pure): nothing of the host's apt configuration or keys is used."""
    return "\n".join([
        'Dir "%s/";' % dirs["base"],
        'Dir::Etc::SourceList "%s";' % dirs["sources"],
        'Dir::Etc::SourceParts "/nonexistent";',
        'Dir::Etc::Parts "/nonexistent";',
        'Dir::Etc::Preferences "/nonexistent";',
        'Dir::Etc::PreferencesParts "/nonexistent";',
        'Dir::Etc::Trusted "/nonexistent";',
        'Dir::Etc::TrustedParts "/nonexistent";',
        'Dir::State "%s/state";' % dirs["base"],
        'Dir::State::Lists "%s";' % dirs["lists"],
        'Dir::State::status "%s";' % dirs["status"],
        'Dir::Cache "%s/cache";' % dirs["base"],
        'Dir::Cache::Archives "%s";' % dirs["archives"],
        'APT::Architecture "%s";' % target.arch,
        'APT::Architectures "%s";' % target.arch,
        'APT::Install-Recommends "false";',
        'APT::Install-Suggests "false";',
        'Acquire::Languages "none";',
        'Acquire::Retries "3";',
        'Acquire::AllowInsecureRepositories "false";',
        'Acquire::AllowDowngradeToInsecureRepositories "false";',
        'APT::Get::AllowUnauthenticated "false";',
        'Debug::NoLocking "true";',
        "",
    ])


def install_keyrings(target, base):
    """Copy each archive's keyring to BASE/keyrings/NAME.gpg, mode 0644: apt verifies as the
    unprivileged _apt user, which cannot read a keyring in a private directory (it would
    report NO_PUBKEY). Returns {archive name: path}."""
    out = {}
    os.makedirs(os.path.join(base, "keyrings"), exist_ok=True)
    for a in target.archives:
        dest = os.path.join(base, "keyrings", a.name + ".gpg")
        shutil.copyfile(a.keyring_path(), dest)
        os.chmod(dest, 0o644)
        out[a.name] = dest
    return out


def setup_apt(ctx, deb_src=False):
    dirs = apt_dirs(ctx)
    for d in ("base", "archives", "lists"):
        os.makedirs(dirs[d], exist_ok=True)
    os.makedirs(os.path.join(dirs["archives"], "partial"), exist_ok=True)
    os.makedirs(os.path.join(dirs["lists"], "partial"), exist_ok=True)
    os.makedirs(os.path.join(dirs["base"], "cache"), exist_ok=True)
    os.makedirs(os.path.join(dirs["base"], "state"), exist_ok=True)
    with open(dirs["conf"], "w") as f:
        f.write(apt_config(ctx.target, dirs))
    with open(dirs["sources"], "w") as f:
        f.write(sources_list(ctx.target, deb_src=deb_src, keyrings=install_keyrings(ctx.target, dirs["base"])))
    open(dirs["status"], "w").close()
    return dirs


def apt(dirs, *args, log_file=None):
    return run("apt-get", "-q", *args, env={"APT_CONFIG": dirs["conf"], "LC_ALL": "C"}, log_file=log_file)


def blame(output, archives):
    """(archive, apt's message) for the first error or warning of apt's ``output`` that names
    one of ``archives`` by URL, else (None, last error line). Pure."""
    lines = [" ".join(l.split()) for l in output.splitlines() if l.startswith(("E:", "W:", "Err:"))]
    by_len = sorted(archives, key=lambda a: -len(a.url))
    # apt's "GPG error" warning says why a signature failed; its "E:" line only that it did
    for line in sorted(lines, key=lambda l: (0 if "GPG error" in l else 1 if l.startswith("E:") else 2)):
        for a in by_len:
            if a.url.rstrip("/") + "/" in line or a.url.rstrip("/") + " " in line:
                return a, line
    return None, (lines[-1] if lines else "")


def _explain(e, archives, what, advice):
    archive, line = blame(e.output, archives)
    if archive is None:
        names = ", ".join("%s (%s)" % (a.name, a.url) for a in archives)
        return BuildError("%s %s: %s; %s" % (what, names, e, advice))
    return BuildError("%s %s (%s): %s; %s" % (what, archive.name, archive.url, line, advice))


def update(ctx, dirs):
    try:
        apt(dirs, "update", "--error-on=any", log_file=ctx.path("fetch.log"))
    except BuildError as e:
        raise _explain(e, ctx.target.archives, "cannot get a verified package index from",
                       "check the mirror URL and that its key is the target's keyring") from None


def resolve(dirs, packages):
    """The packages apt would install for ``packages`` on an empty system: [(name, version, arch)]."""
    try:
        out = apt(dirs, "-s", "install", *packages)
    except BuildError as e:
        raise BuildError("cannot resolve packages %s: %s; check the package names in the target "
                         "file" % (" ".join(packages), e)) from None
    found = [m.groups() for m in map(INST.match, out.splitlines()) if m]
    return sorted(set(found))


def deb_filename(name, version, arch):
    """apt's cache name of a .deb (an epoch's ':' is stored as %3a)."""
    return "%s_%s_%s.deb" % (name, version.replace(":", "%3a"), arch)


def select_extract(resolved, wanted, kernel_flavour):
    """From the resolved extract set keep the named packages and the kernel they point at (pure)."""
    kernel = re.compile(r"^linux-image-\d+\.\d+\.\d+-\d+-%s$" % re.escape(kernel_flavour))
    return [p for p in resolved if p[0] in wanted or kernel.match(p[0])]


def fetch(ctx):
    dirs = setup_apt(ctx)
    update(ctx, dirs)
    t = ctx.target
    root = resolve(dirs, t.packages + t.build_only)
    extract = select_extract(resolve(dirs, t.extract), t.extract, t.kernel_flavour)
    for group in (t.packages + t.build_only, t.extract):
        try:
            apt(dirs, "install", "-y", "--download-only", *group, log_file=ctx.path("fetch.log"))
        except BuildError as e:
            raise _explain(e, t.archives, "cannot download verified packages from",
                           "nothing was unpacked; check or resync the mirror") from None
    result = {}
    for key, pkgs in (("root", root), ("extract", extract)):
        entries = []
        for name, version, arch in pkgs:
            deb = os.path.join(dirs["archives"], deb_filename(name, version, arch))
            if not os.path.isfile(deb):
                raise BuildError("apt reported %s %s but %s is not in the cache" % (name, version, deb))
            entries.append({"name": name, "version": version, "arch": arch, "deb": deb})
        result[key] = entries
    out = ctx.path("fetch", "packages.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    os.replace(out + ".tmp", out)


def packages(ctx):
    with open(ctx.path("fetch", "packages.json")) as f:
        return json.load(f)


def tasks(ctx):
    yield {
        "name": "fetch",
        "doc": "resolve and download the target's .debs (apt, signatures verified) into build/cache/",
        "actions": [(fetch, [ctx])],
        "targets": [ctx.path("fetch", "packages.json")],
        "uptodate": [_config(ctx)],
        "clean": True,
    }


def _config(ctx):
    from doit.tools import config_changed
    t = ctx.target
    return config_changed({"archives": [a.__dict__ for a in t.archives], "packages": t.packages,
                           "build_only": t.build_only, "extract": t.extract, "arch": t.arch})
