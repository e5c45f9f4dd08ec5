"""Bring the network up inside MIGOS from the backed-up configuration: the first wired
interface (static from its keyfile, else DHCP); when that gives no address, wifi through
wpa_supplicant with the backed-up wifi keyfiles (where the board has a wifi interface)."""

import os
import time

from .. import log, run
from . import plan

UDHCPC_SCRIPT = "/usr/share/migos/udhcpc.script"


WPA_CONF = "/run/migos/wpa_supplicant.conf"


def up(keyfiles, wait=30, sys_net="/sys/class/net", country=None):
    """Wired first, then wifi; return the configured interface's name or None."""
    wifi = plan.wifi_networks(keyfiles)
    iface = wired_up(keyfiles, wait=wait if not wifi else min(wait, 10), sys_net=sys_net)
    if iface is None and wifi:
        iface = wifi_up(keyfiles, wifi, country, wait=wait, sys_net=sys_net)
    return iface


def wait_for_interface(choose, wait, sys_net):
    """The interface ``choose`` picks from /sys/class/net once one appears, or None after
    ``wait`` seconds (drivers and firmware load in the background)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            iface = choose(os.listdir(sys_net))
        except OSError:
            iface = None
        if iface or time.monotonic() >= deadline:
            return iface
        time.sleep(1)


def wifi_up(keyfiles, networks, country, wait=30, sys_net="/sys/class/net"):
    """Join the backed-up wifi networks with wpa_supplicant, then DHCP (or the static address of
    the first network's keyfile)."""
    iface = wait_for_interface(plan.wireless_interface, wait, sys_net)   # brcmfmac loads firmware first
    if not iface:
        log.event("ERROR", "no wifi interface appeared in %ds: the old OS's wifi cannot be used" % wait)
        return None
    fd = os.open(WPA_CONF, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plan.wpa_conf(networks, country))
    run.run(["ip", "link", "set", iface, "up"], check=False)
    proc = run.run(["wpa_supplicant", "-B", "-i", iface, "-c", WPA_CONF, "-P", "/run/wpa_supplicant.pid"],
                   check=False, timeout=30)
    if proc.returncode != 0:
        log.event("ERROR", "wifi: wpa_supplicant did not start on %s" % iface)
        return None
    log.event("OK", "wifi: wpa_supplicant on %s with %d network(s): %s" % (
        iface, len(networks), ", ".join(n for n, *_ in networks)))
    return address(iface, plan.static_ipv4(keyfiles[networks[0][0]]), tries=20, timeout=3, what="wifi")


def address(iface, static, tries=10, timeout=2, what="wired"):
    """The backed-up static address on ``iface``, else a DHCP lease; the interface or None."""
    if static:
        return _static(iface, static)
    proc = run.run(["udhcpc", "-i", iface, "-n", "-q", "-t", str(tries), "-T", str(timeout), "-s", UDHCPC_SCRIPT],
                   check=False)
    if proc.returncode != 0:
        log.event("ERROR", "network: no DHCP lease on %s (%s)" % (iface, what))
        return None
    log.event("OK", "network: %s configured by DHCP (%s)" % (iface, what))
    return iface


def _static(iface, static):
    addr, gw, dns = static
    run.run(["ip", "addr", "add", addr, "dev", iface], check=False)
    if gw:
        run.run(["ip", "route", "add", "default", "via", gw], check=False)
    if dns:
        with open("/etc/resolv.conf", "w") as f:
            f.write("".join("nameserver %s\n" % d for d in dns))
    log.event("OK", "network: %s static %s via %s (from the backed-up configuration)" % (iface, addr, gw))
    return iface


def wired_up(keyfiles, wait=30, sys_net="/sys/class/net"):
    """Configure the first wired interface; return its name or None. ``keyfiles``: {name: text}."""
    iface = wait_for_interface(plan.wired_interface, wait, sys_net)
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
    return address(iface, static)
