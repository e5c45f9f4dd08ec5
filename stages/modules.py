"""modules: the kernel modules MIGOS needs (the target's list) and everything they depend on.

Dependencies come from the kernel's own modules.dep (made with the host's ``depmod -b``
on the unpacked tree); modules built into the kernel (modules.builtin) need no file.
``plan`` is pure and unit-tested; ``build_modules`` copies the files and runs depmod on
the selection so busybox ``modprobe`` works in the image.

One module set per kernel release the boards need (kernel.json ``needed``): each kernel
gets the target's list, less what that kernel lacks (a module may exist only in some
flavours, e.g. virtio in the one qemu ``virt`` runs); a module no kernel has fails the build.
"""

import glob
import os
import shutil

from . import kernel, stamp
from .tools import BuildError, run


def canonical(name):
    """Module names treat '-' and '_' alike; strip directory and .ko(.xz|.zst|.gz)."""
    base = os.path.basename(name)
    for ext in (".xz", ".zst", ".gz"):
        if base.endswith(ext):
            base = base[:-len(ext)]
    if base.endswith(".ko"):
        base = base[:-3]
    return base.replace("-", "_")


def parse_modules_dep(text):
    """modules.dep text -> {canonical name: (relpath, [relpath of dependencies])}."""
    table = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, deps = line.split(":", 1)
        table[canonical(path)] = (path.strip(), deps.split())
    return table


def plan(wanted, modules_dep, builtin, missing=None):
    """Relative paths of the .ko files to ship for ``wanted`` module names (sorted).

    Raises BuildError naming a module that is neither a file nor built in; with a list as
    ``missing`` such modules are appended to it instead.
    """
    table = parse_modules_dep(modules_dep)
    by_path = {path: name for name, (path, _) in table.items()}
    builtins = {canonical(line) for line in builtin.splitlines() if line.strip()}
    chosen = set()
    unknown = []
    for name in wanted:
        key = canonical(name)
        if key in builtins:
            continue
        if key not in table:
            unknown.append(name)
            continue
        path, deps = table[key]
        chosen.add(path)
        chosen.update(deps)
    if unknown and missing is not None:
        missing.extend(unknown)
    elif unknown:
        raise BuildError("kernel module%s %s not found in modules.dep or modules.builtin; fix the "
                         "target's modules list" % ("s" if len(unknown) > 1 else "", ", ".join(unknown)))
    # modules.dep lists the whole closure on each line, but be exact anyway
    todo = list(chosen)
    while todo:
        path = todo.pop()
        deps = table[by_path[path]][1] if path in by_path else []
        for d in deps:
            if d not in chosen:
                chosen.add(d)
                todo.append(d)
    return sorted(chosen)


def absent_everywhere(wanted, missing_by_release):
    """The wanted modules that every kernel lacks (pure): those are errors, not flavour gaps."""
    sets = [set(m) for m in missing_by_release.values()]
    return [w for w in wanted if sets and all(w in s for s in sets)]


def build_modules(ctx):
    info = kernel.info(ctx)
    kernels = info.get("kernels") or {None: {"release": info["release"], "modules": info["modules"]}}
    needed = info.get("needed") or list(kernels)
    out = ctx.path("modules")
    if os.path.exists(out):
        shutil.rmtree(out)
    chosen_by, missing_by = {}, {}
    for flavour in needed:
        release, src = kernels[flavour]["release"], kernels[flavour]["modules"]
        missing = []
        chosen_by[release] = copy_modules(ctx, release, src, out, missing)
        missing_by[release] = missing
    everywhere = absent_everywhere(ctx.target.modules, missing_by)
    if everywhere:
        raise BuildError("kernel module%s %s not found in any kernel's modules.dep or modules.builtin; fix "
                         "the target's modules list" % ("s" if len(everywhere) > 1 else "", ", ".join(everywhere)))
    blobs = firmware_files(ctx.path("kernel"), ctx.target.firmware)
    for rel, full in blobs:
        os.makedirs(os.path.join(out, "usr", "lib", "firmware", os.path.dirname(rel)), exist_ok=True)
        shutil.copy(full, os.path.join(out, "usr", "lib", "firmware", rel))   # links resolved
    stamp.write(ctx.path("modules.json"), [out], modules=chosen_by,
                absent={r: m for r, m in missing_by.items() if m}, firmware=[r for r, _ in blobs])


def copy_modules(ctx, release, src, out, missing):
    """The target's modules of kernel ``release`` (module tree ``src``) into out/usr/lib/modules,
    depmod'ed; names it lacks go to ``missing``. Returns the copied paths."""
    suffix = os.path.join("lib", "modules", release)
    if not src.endswith(suffix):
        raise BuildError("unexpected module directory %s" % src)
    run("depmod", "-b", src[:-len(suffix)], release)
    with open(os.path.join(src, "modules.dep")) as f:
        dep = f.read()
    with open(os.path.join(src, "modules.builtin")) as f:
        builtin = f.read()
    chosen = plan(ctx.target.modules, dep, builtin, missing=missing)
    dest = os.path.join(out, "usr", "lib", "modules", release)
    os.makedirs(dest)
    for rel in chosen:
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(src, rel), os.path.join(dest, rel))
    for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if os.path.exists(os.path.join(src, meta)):
            shutil.copy2(os.path.join(src, meta), os.path.join(dest, meta))
    run("depmod", "-b", os.path.join(out, "usr"), release)
    return chosen


def firmware_files(tree, globs):
    """[(path under lib/firmware, file)] of the unpacked extract set matching ``globs``; a glob
    that matches nothing fails the build (a renamed blob would otherwise vanish silently)."""
    bases = [os.path.join(tree, "usr", "lib", "firmware"), os.path.join(tree, "lib", "firmware")]
    out = {}
    for g in globs:
        hits = []
        for base in bases:
            hits += [(os.path.relpath(p, base), p) for p in glob.glob(os.path.join(base, g))
                     if os.path.isfile(p)]
        if not hits:
            raise BuildError("firmware %r matches no file of the extract set; fix the target's "
                             "firmware list or its extract packages" % g)
        out.update(hits)
    return sorted(out.items())


def tasks(ctx):
    yield {
        "name": "modules",
        "doc": "select the kernel modules the Pi and qemu need (dependencies from modules.dep)",
        "actions": [(build_modules, [ctx])],
        "file_dep": [ctx.path("kernel.json"), __file__],
        "targets": [ctx.path("modules.json")],
        "uptodate": [_config(ctx)],
        "clean": True,
    }


def _config(ctx):
    from doit.tools import config_changed
    return config_changed({"modules": ctx.target.modules, "firmware": ctx.target.firmware})
