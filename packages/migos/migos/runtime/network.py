"""Bring the network up inside MIGOS: the backed-up wired configuration, else DHCP."""

import os
import time

from .. import log, run
from . import plan

UDHCPC_SCRIPT = "/usr/share/migos/udhcpc.script"


def up(keyfiles, wait=30, sys_net="/sys/class/net"):
    """Configure the first wired interface; return its name or None. ``keyfiles``: {name: text}."""
    deadline = time.monotonic() + wait
    iface = None
    while time.monotonic() < deadline:
        try:
            iface = plan.wired_interface(os.listdir(sys_net))
        except OSError:
            iface = None
        if iface:
            break
        time.sleep(1)
    if not iface:
        log.event("ERROR", "no wired network interface (eth*, end*, enx*, usb*) appeared in %ds" % wait)
        return None
    run.run(["ip", "link", "set", iface, "up"], check=False)
    static = None
    for name in sorted(keyfiles):
        if plan.is_wired_keyfile(keyfiles[name]):
            static = plan.static_ipv4(keyfiles[name])
            if static:
                break
    if static:
        addr, gw, dns = static
        run.run(["ip", "addr", "add", addr, "dev", iface], check=False)
        if gw:
            run.run(["ip", "route", "add", "default", "via", gw], check=False)
        if dns:
            with open("/etc/resolv.conf", "w") as f:
                f.write("".join("nameserver %s\n" % d for d in dns))
        log.event("OK", "network: %s static %s via %s (from the backed-up configuration)" % (iface, addr, gw))
        return iface
    proc = run.run(["udhcpc", "-i", iface, "-n", "-q", "-t", "10", "-T", "2", "-s", UDHCPC_SCRIPT], check=False)
    if proc.returncode != 0:
        log.event("ERROR", "network: no DHCP lease on %s" % iface)
        return None
    log.event("OK", "network: %s configured by DHCP" % iface)
    return iface
