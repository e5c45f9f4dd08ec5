"""The NetworkManager daemon itself (Debian's network-manager, keyfile plugin) loads every
keyfile stage 1 produces from all fixture OSes. It runs in private network and mount
namespaces with its own D-Bus, so the host's network is never touched."""

import os
import shutil
import subprocess

import pytest

import os_fixtures as fx
from migos.stage1 import netconf

pytestmark = pytest.mark.root

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%(d)s/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""

NM_CONF = """[main]
plugins=keyfile
auth-polkit=false
no-auto-default=*
[keyfile]
path=%(d)s/conns
[logging]
level=INFO
"""

SCRIPT = """set -e
mount -t tmpfs none /run
mkdir -p /run/NetworkManager
mount -t tmpfs none /var/lib/NetworkManager 2>/dev/null || true
dbus-daemon --config-file=%(d)s/bus.conf --fork --nopidfile --print-pid=3 3>%(d)s/dbus.pid \
    </dev/null >/dev/null 2>&1
trap 'kill $(cat %(d)s/dbus.pid) 2>/dev/null || true' EXIT
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=%(d)s/bus
NetworkManager --no-daemon --debug --config=%(d)s/nm.conf --config-dir=%(d)s/conf.d \
    --state-file=%(d)s/NM.state </dev/null > %(d)s/nm.log 2>&1 &
NM=$!
for i in $(seq 100); do nmcli -t general status >/dev/null 2>&1 && break; sleep 0.1; done
nmcli -t -f UUID,FILENAME connection show > %(d)s/list
mkdir -p %(d)s/show
while IFS=: read -r u file; do
  # early in NetworkManager's startup a secret can come back empty: ask again
  for try in 1 2 3 4 5 6 7 8 9 10; do
    nmcli -s -t -f 802-11-wireless-security.psk,802-1x.password,ipv4.addresses \
      connection show "$u" > %(d)s/show/$u
    if grep -q '^psk=' "$file" && grep -q '^802-11-wireless-security.psk:$' %(d)s/show/$u; then
      sleep 0.3
    else
      break
    fi
  done
done < %(d)s/list
kill $NM
wait $NM || true
"""


def test_networkmanager_daemon_loads_every_keyfile(tmp_path, needs_root):
    for prog in ("NetworkManager", "nmcli", "dbus-daemon", "unshare"):
        if not shutil.which(prog):
            pytest.skip("%s is not installed" % prog)
    d = str(tmp_path / "nm")
    conns = os.path.join(d, "conns")
    os.makedirs(os.path.join(d, "conf.d"))
    expected = {}
    for kind in sorted(fx.MODELS):
        root = fx.make_tree(str(tmp_path / kind), kind)
        cfg = netconf.collect(root)
        out = str(tmp_path / (kind + "-out"))
        for p in netconf.write_keyfiles(cfg, out):
            name = kind + "-" + os.path.basename(p)
            os.makedirs(conns, exist_ok=True)
            shutil.copy(p, os.path.join(conns, name))
            os.chmod(os.path.join(conns, name), 0o600)
        for c in cfg.connections:
            expected[c.uuid] = c
    for name, text in (("bus.conf", BUS_CONF), ("nm.conf", NM_CONF), ("run.sh", SCRIPT)):
        with open(os.path.join(d, name), "w") as f:
            f.write(text % {"d": d})
    r = subprocess.run(["unshare", "-n", "-m", "-f", "sh", os.path.join(d, "run.sh")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                       timeout=60)
    log = open(os.path.join(d, "nm.log")).read() if os.path.exists(os.path.join(d, "nm.log")) else ""
    assert r.returncode == 0, r.stdout + log
    loaded = dict(line.split(":", 1) for line in open(os.path.join(d, "list")).read().splitlines())
    assert set(loaded) == set(expected), log
    assert all(v.startswith(conns + "/") for v in loaded.values())
    # nothing of ours made the keyfile plugin complain
    complaints = [ln for ln in log.splitlines() if "keyfile" in ln and
                  ("error" in ln.lower() or "warn" in ln.lower() or "invalid" in ln.lower())]
    assert complaints == []
    checked = 0
    for uuid, c in expected.items():
        with open(os.path.join(d, "show", uuid)) as f:
            shown = dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)
        for section, key, field in (("wifi-security", "psk", "802-11-wireless-security.psk"),
                                    ("802-1x", "password", "802-1x.password"),
                                    ("ipv4", "address1", "ipv4.addresses")):
            want = c.get(section, key) if c.raw is None else None
            if want:
                # nmcli -t escapes ':' and '\\' in values
                assert shown[field].replace("\\:", ":").replace("\\\\", "\\") == want, \
                    (c.id, field, shown)
                checked += 1
    assert checked >= 10
