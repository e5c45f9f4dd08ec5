"""Registers the stage-1 subcommands: diagnostic, backup, init, takeover, restore-boot."""

import os

from .. import log


def _positive(text):
    import argparse
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


def _check_options(p):
    g = p.add_argument_group("checks")
    g.add_argument("--no-os-check", action="store_true", help="do not refuse an unsupported OS")
    g.add_argument("--no-dt-check", action="store_true",
                   help="do not check the board and device type")
    g.add_argument("--no-api-check", action="store_true", help="do not check the balena API /ping")
    g.add_argument("--no-vpn-check", action="store_true", help="do not check the balena VPN port")
    g.add_argument("--no-nwmgr-check", action="store_true",
                   help="go ahead even if network configurations cannot be carried over")
    g.add_argument("--check-timeout", type=_positive, default=20, metavar="S",
                   help="seconds to wait for the API and VPN checks (default 20)")
    g.add_argument("--change-dt-to", metavar="SLUG",
                   help="migrate to this balena device type instead of config.json's")
    g.add_argument("--disk", metavar="PATH",
                   help="the disk (device or image file) behind the boot partition, if it "
                   "cannot be found from the mounts")


def _network_options(p):
    g = p.add_argument_group("network")
    g.add_argument("--wifi", action="append", metavar="SSID",
                   help="carry over only this wifi network (repeatable)")
    g.add_argument("--no-wifis", action="store_true", help="carry over no wifi network")
    g.add_argument("--nwmgr-cfg", action="append", metavar="FILE",
                   help="also carry over this NetworkManager keyfile (repeatable)")


def _migration_options(p, takeover):
    p.add_argument("-c", "--config", required=not takeover, metavar="config.json",
                   help="the fleet's config.json (from the balena dashboard)")
    src = p.add_mutually_exclusive_group(required=not takeover)
    src.add_argument("-i", "--image", metavar="IMAGE",
                     help="balenaOS image: a path on the device or an http(s) URL")
    src.add_argument("-v", "--version", metavar="V",
                     help="balenaOS version from the API: x.y.z[+revN], ~x.y.z or ^x.y "
                     "(default: the latest release)")
    p.add_argument("--migos-tarball", metavar="PATH",
                   help="MIGOS boot tarball (SHA256SUMS next to it is checked)")
    p.add_argument("--migos-url", metavar="URL", help="download the MIGOS boot tarball from URL")
    p.add_argument("--pretend", action="store_true", help="do everything but write and reboot")
    p.add_argument("--no-reboot", action="store_true", help="do not reboot at the end")
    p.add_argument("-w", "--work-dir", default=".", metavar="DIR",
                   help="where downloads and the backup go (default: the current directory)")
    p.add_argument("--no-keep-name", action="store_true", help="do not keep the hostname")
    p.add_argument("--no-cleanup", action="store_true",
                   help="keep MIGOS's files after the migration (debugging)")
    p.add_argument("--backup-cfg", metavar="YAML",
                   help="files to carry over into balenaOS volumes (takeover's backup format)")
    p.add_argument("-f", "--flash-to", metavar="DEVICE",
                   help="the disk to write balenaOS to (default: the boot disk)")
    lg = p.add_argument_group("stage-2 logging")
    lg.add_argument("-l", "--log-to", metavar="DEVICE",
                    help="stage 2 writes its log to this device's file system")
    lg.add_argument("--log-http", metavar="URL", default=os.environ.get("MIGOS_LOG_HTTP"),
                    help="stage 2 ships its events to this http(s) endpoint (JSON batches) and the "
                    "full log at the end (NDJSON); default $MIGOS_LOG_HTTP")
    lg.add_argument("--s2-log-level", choices=sorted(log.LEVELS), default="info",
                    help="stage-2 log level (default info)")
    lg.add_argument("--fallback-log", action="store_true",
                    help="keep the stage-2 log in RAM and write it to the new data partition")
    lg.add_argument("--fallback-log-filename", default="migos-fallback.log", metavar="NAME")
    lg.add_argument("--fallback-log-dir", default="/", metavar="DIR")
    ag = p.add_argument_group("fleet agent")
    ag.add_argument("--agent-config", metavar="FILE",
                    help="carry this agent configuration (and its key) into MIGOS, whose agent "
                    "then publishes the migration's events (default: /etc/migos/agent.json "
                    "when it exists)")
    ag.add_argument("--no-agent", action="store_true", help="do not carry the fleet agent into MIGOS")
    _check_options(p)
    _network_options(p)


def register(sub, common_options):
    from . import flow

    p = sub.add_parser("diagnostic", help="check whether this device can be migrated",
                       description="Check the device (OS, board, device type, disk, free space, "
                       "RAM, network, config.json) and print a report. Exit 0 only if the "
                       "migration may go ahead.")
    common_options(p)
    p.add_argument("-c", "--config", metavar="config.json", help="the fleet's config.json")
    _check_options(p)
    _network_options(p)
    p.set_defaults(func=flow.diagnostic)

    p = sub.add_parser("backup", help="back up boot files, hostname and network configuration",
                       description="Copy the boot partition's files (checksummed) and the "
                       "hostname to DIR, and convert every network configuration to "
                       "NetworkManager keyfiles, one file per connection.")
    common_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="an empty or new directory")
    p.add_argument("--pretend", action="store_true", help="say what would be written")
    _network_options(p)
    p.set_defaults(func=flow.backup)

    p = sub.add_parser("init", help="install MIGOS on the boot partition",
                       description="Run every check, back up, then install MIGOS onto the boot "
                       "partition so the next boot migrates to balenaOS. Undo with "
                       "'migos restore-boot'.")
    common_options(p)
    _migration_options(p, takeover=False)
    p.set_defaults(func=flow.init)

    p = sub.add_parser("takeover", help="diagnostic + backup + init + reboot in one go",
                       description="Everything in one go, with the options of balena's "
                       "takeover: check, back up, install MIGOS, reboot into it.")
    common_options(p)
    _migration_options(p, takeover=True)
    p.add_argument("-d", "--download-only", action="store_true",
                   help="only download the balenaOS image to the work dir (any machine)")
    p.add_argument("--no-ack", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=flow.takeover)

    p = sub.add_parser("restore-boot", help="give the old OS its boot partition back",
                       description="Undo 'migos init': the old OS's boot partition, exactly. "
                       "Allowed only before MIGOS has started writing the disk.")
    common_options(p)
    p.add_argument("--pretend", action="store_true", help="say what would be done")
    p.add_argument("--disk", metavar="PATH", help="the disk under the boot partition (to see "
                   "whether MIGOS has started writing it); default: the one init recorded")
    p.set_defaults(func=flow.restore_boot)
