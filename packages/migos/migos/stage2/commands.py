"""Registers the stage-2 subcommands: ``migos migrate`` (DESIGN.md 2)."""


def register(sub, common_options):
    p = sub.add_parser(
        "migrate", help="stream a balenaOS image onto DEV next to the old boot partition and "
        "switch to it (resumes after a crash)",
        description="The stage-2 state machine: writes a balenaOS image next to the old boot "
        "partition, verifies every partition by reading it back, injects config.json and "
        "NetworkManager files, and switches the MBR as the very last write. Running the same "
        "command again after a crash resumes. Exit codes: 0 done; 1 stopped after writing "
        "(run it again: it resumes); 2 bad input, nothing written; 3 the image source could not "
        "be reached, nothing written (try again later).")
    common_options(p)
    p.add_argument("--device", required=True, metavar="DEV",
                   help="the whole disk (block device) or a disk image file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", "-i", metavar="SRC",
                     help="balenaOS image: a path or http(s) URL; raw, .gz, .xz, .zst or .zip "
                     "(detected from the content)")
    src.add_argument("--version", "-v", metavar="V",
                     help="without --image: balenaOS version from the balena API, exact "
                     "(2.50.1+rev1) or a ~/^ range (default: latest production release)")
    p.add_argument("-c", "--config", metavar="config.json",
                   help="the fleet's config.json (default: config.json on the old boot partition)")
    p.add_argument("--nwmgr-cfg", action="append", default=[], metavar="FILE",
                   help="NetworkManager connection file for system-connections/ (repeatable)")
    p.add_argument("--hostname", metavar="NAME", help="hostname written into config.json")
    p.add_argument("--discard-journal", action="store_true",
                   help="ignore the journal of an interrupted migration of another image and "
                   "start over")
    p.add_argument("--no-verify-first", action="store_true",
                   help="skip decompressing the whole image once before the first write (faster, "
                   "but a corrupt image is then found only after the old OS is gone)")
    p.set_defaults(func=_migrate)


def _migrate(args):
    from . import migrate
    return migrate.main(args)
