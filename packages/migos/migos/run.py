"""The one place MIGOS (stage 1 and stage 2) runs external programs.

Every command is logged (state CMDLOG) with its exit code; a failure raises
:class:`CommandFailed` naming the program and the first line of its error output.
"""

import os
import shutil
import subprocess

from . import log
from .errors import MigosError


class CommandFailed(MigosError):
    pass


def which(program):
    return shutil.which(program)


def environment(changes):
    """The process environment with ``changes`` applied (a value of None unsets it)."""
    env = dict(os.environ)
    for k, v in changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def error_lines(proc):
    """The lines of a finished command's error output (its output when it wrote no errors)."""
    text = proc.stderr or proc.stdout or ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text.strip().splitlines()


def run(argv, check=True, input=None, timeout=None, capture=True, env=None, binary=False):
    """Run ``argv``; return ``CompletedProcess`` with text (``binary``: bytes) stdout/stderr.
    ``env``: variables set in (None: removed from) the environment."""
    argv = [str(a) for a in argv]
    log.LOG.event("CMDLOG", "run: " + " ".join(argv), level="debug", depth=2)
    try:
        proc = subprocess.run(argv, input=input, timeout=timeout, universal_newlines=not binary,
                              env=environment(env) if env else None,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.PIPE if capture else None)
    except FileNotFoundError:
        raise CommandFailed("%s is not installed" % argv[0], "install it and try again")
    except subprocess.TimeoutExpired:
        raise CommandFailed("%s did not finish within %ss" % (argv[0], timeout))
    if check and proc.returncode != 0:
        err = error_lines(proc)
        raise CommandFailed("%s failed (exit %d): %s" % (
            " ".join(argv[:3]), proc.returncode, err[-1] if err else "no output"))
    return proc


def spawn(argv, env=None, stdout=None, stderr=None):
    """Start ``argv`` in the background (logged like :func:`run`); return its ``Popen``.
    stdin is /dev/null; stdout/stderr are inherited unless given."""
    argv = [str(a) for a in argv]
    log.LOG.event("CMDLOG", "spawn: " + " ".join(argv), level="debug", depth=2)
    try:
        proc = subprocess.Popen(argv, env=environment(env) if env else None,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
    except FileNotFoundError:
        raise CommandFailed("%s is not installed" % argv[0], "install it and try again")
    log.LOG.event("CMDLOG", "spawned %s as pid %d" % (argv[0], proc.pid), level="debug", depth=2)
    return proc
