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


def run(argv, check=True, input=None, timeout=None, capture=True, env=None):
    """Run ``argv``; return ``CompletedProcess`` with text stdout/stderr. ``env``: variables
    added to the environment."""
    argv = [str(a) for a in argv]
    log.LOG.event("CMDLOG", "run: " + " ".join(argv), level="debug", depth=2)
    try:
        proc = subprocess.run(argv, input=input, timeout=timeout, universal_newlines=True,
                              env=dict(os.environ, **env) if env else None,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.PIPE if capture else None)
    except FileNotFoundError:
        raise CommandFailed("%s is not installed" % argv[0], "install it and try again")
    except subprocess.TimeoutExpired:
        raise CommandFailed("%s did not finish within %ss" % (argv[0], timeout))
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise CommandFailed("%s failed (exit %d): %s" % (
            " ".join(argv[:3]), proc.returncode, err[-1] if err else "no output"))
    return proc
