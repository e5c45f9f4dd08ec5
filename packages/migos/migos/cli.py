"""The ``migos`` command line: one entry point, subcommands registered by each stage.

Stage modules expose ``register(subparsers)``; each subcommand sets ``func(args)``
that returns an exit code. Errors derived from :class:`migos.errors.MigosError`
become one line on stderr and their exit code (2 for bad input).
"""

import argparse
import sys

from . import __version__, log
from .errors import MigosError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default prints usage; we want one line, exit 2
        sys.stderr.write("migos: error: %s; see 'migos %s--help'\n" % (
            message, (self.prog.split(" ", 1)[1] + " ") if " " in self.prog else ""))
        sys.exit(2)


def common_options(p):
    """Options every command takes (DESIGN.md 2)."""
    p.add_argument("--root", default="/", metavar="DIR",
                   help="the OS tree to work on (default /; a fixture tree in tests)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--log-level", choices=sorted(log.LEVELS), default="info",
                   help="least important events shown (default info)")
    p.add_argument("--log-file", metavar="FILE", help="also append JSON events to FILE")


def build_parser():
    parser = _Parser(prog="migos", description="Migrate a Raspberry Pi from Raspbian/Debian to balenaOS in place.")
    parser.add_argument("--version", action="version", version="migos " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    from .stage1 import commands as stage1_commands
    from .stage2 import commands as stage2_commands
    stage1_commands.register(sub, common_options)
    stage2_commands.register(sub, common_options)
    from .fleet import operator as fleet_commands
    from . import genboot
    fleet_commands.register(sub, common_options)
    genboot.register(sub, common_options)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    log.LOG.configure(level=getattr(args, "log_level", None), log_file=getattr(args, "log_file", None))
    shipper = None
    try:
        if args.command != "agent":      # the agent ships its own (MQTT and/or HTTP)
            shipper = _remote_log()
        return args.func(args) or 0
    except MigosError as e:
        sys.stderr.write("migos %s: %s\n" % (args.command, e.line()))
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("migos %s: interrupted\n" % args.command)
        return 130
    finally:
        if shipper is not None:
            shipper.stop(drain_timeout=5.0)


def _remote_log():
    """Ship events to $MIGOS_LOG_HTTP when set (migos.fleet.logship); never fatal."""
    import os
    if not os.environ.get("MIGOS_LOG_HTTP"):
        return None
    from .fleet import logship
    try:
        return logship.from_env()
    except (OSError, ValueError) as e:
        sys.stderr.write("migos: remote log disabled: %s\n" % e)
        return None
