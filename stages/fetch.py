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


def sources_list(target, deb_src=False):
    """The one-line sources.list for the target's archives (pure)."""
    lines = []
    for a in target.archives:
        for kind in (("deb", "deb-src") if deb_src else ("deb",)):
            lines.append("%s [signed-by=%s] %s %s %s" % (
                kind, a.keyring_path(), a.url, a.suite, " ".join(a.components)))
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
        f.write(sources_list(ctx.target, deb_src=deb_src))
    open(dirs["status"], "w").close()
    return dirs


def apt(dirs, *args, log_file=None):
    return run("apt-get", "-q", *args, env={"APT_CONFIG": dirs["conf"], "LC_ALL": "C"}, log_file=log_file)


def update(ctx, dirs):
    try:
        apt(dirs, "update", "--error-on=any", log_file=ctx.path("fetch.log"))
    except BuildError as e:
        names = ", ".join("%s (%s)" % (a.name, a.url) for a in ctx.target.archives)
        raise BuildError("cannot get a verified package index from %s: %s; check the mirror "
                         "URL and that its key is the target's keyring" % (names, e)) from None


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
            raise BuildError("downloading %s failed: %s" % (" ".join(group), e)) from None
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
