"""MIGOS build: ``doit build`` (default target debian-arm64), ``doit build target=NAME``;
``doit publish dest=DIR [key=KEYID] [src=DIR]`` copies a finished dist/NAME for release.

Command-line variables: ``target=NAME`` (a file multistrap/NAME.toml: debian-arm64,
debian-armhf, raspbian-armhf), ``mirror=URL`` (replaces the target's first archive URL) or
``mirror=NAME=URL,NAME=URL`` (replaces the named archives' URLs, e.g.
``mirror=raspbian=http://cache/raspbian,raspberrypi=http://cache/rpi``). Keyrings stay the
target's: signatures are always checked. The pipeline's steps live in stages/, one
module each (see stages/__init__.py); this file only puts their tasks together.
"""

import logging
import os
import sys

from doit import get_var

REPO = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(REPO, "packages", "migos"))

from stages import (bootpart, dist, fetch, fit, initramfs, kernel, modules, overlay,  # noqa: E402
                    prune, publish, rootfs, target, uboot)
from stages.reporter import OneLineReporter, step  # noqa: E402
from stages.tools import BuildError  # noqa: E402

DOIT_CONFIG = {"default_tasks": ["build"], "verbosity": 1, "action_string_formatting": "new",
               "reporter": OneLineReporter}
logging.basicConfig(level=os.environ.get("MIGOS_BUILD_LOG", "WARNING"), format="%(message)s")


def _context():
    try:
        return target.context(get_var("target", "debian-arm64"), mirror=get_var("mirror", None))
    except BuildError as e:
        sys.stderr.write("migos build: %s\n" % e)
        sys.exit(2)


CTX = _context()
# doit's task state per target: the tasks have the same names for every target, so one shared
# state file would rebuild everything each time the target changes
DOIT_CONFIG["dep_file"] = ".doit.db" if CTX.target.name == "debian-arm64" else ".doit-%s.db" % CTX.target.name
STAGES = (fetch, rootfs, kernel, modules, overlay, prune, initramfs, uboot, fit, bootpart, dist)


def task_build():
    return {"actions": None, "task_dep": ["dist"],
            "doc": "build MIGOS into dist/NAME/: target=NAME (%s; default debian-arm64), "
                   "mirror=URL or mirror=ARCHIVE=URL,ARCHIVE=URL" % ", ".join(target.available())}


def _make(module):
    def task():
        (only,) = list(module.tasks(CTX))   # one task per stage, named after it
        only = dict(only)
        only.pop("name", None)
        only["actions"] = [(step(f), a) for f, a in only["actions"]]
        return only
    task.__doc__ = module.__doc__.strip().splitlines()[0]
    task.__name__ = "task_" + module.__name__.split(".")[-1]
    return task


for _m in STAGES:
    globals()["task_" + _m.__name__.split(".")[-1]] = _make(_m)


def task_publish():
    """copy dist/NAME to dest=DIR: versioned names, SHA256SUMS, detached signature with key=KEYID"""
    (only,) = list(publish.tasks(CTX, dest=get_var("dest", None), key=get_var("key", None),
                                 src=get_var("src", None)))
    only = dict(only)
    only.pop("name", None)
    only["actions"] = [(step(f), a) for f, a in only["actions"]]
    return only
