"""Stage 1: what runs on the device's old OS (diagnostic, backup, init, takeover, restore-boot).

Modules:
  commands  the argparse subcommands and their options (balena takeover 0.10's included)
  flow      what each command does, in order
  osinfo    /etc/os-release and the supported-OS table, device-tree model, arch, RAM, hostname
  disk      the boot partition, the disk behind it (mountinfo, /sys), MBR geometry, free space
  checks    every pre-flight check with its failure message; the diagnostic report
  netconf   wpa_supplicant, dhcpcd, connman, NetworkManager, ifupdown -> connections
  keyfile   the NetworkManager keyfile model, writer (GKeyFile escaping, SSID forms), reader
  backup    ``migos backup --out DIR``
  tarball   the MIGOS boot tarball: SHA256SUMS check, safe reading, shape check
  bootcfg   config.txt semantics (filters, last-wins) and the old OS's kernel entry
  bootinst  install onto / restore the boot partition, power-cut safe (see its docstring)
  api       balena API: /ping, VPN port, versions (~ ^ ranges), download with Range resume
  volumes   ``--backup-cfg`` YAML (takeover's format) -> migos/backup.tgz
The board table shared with the build is ``migos.boards``.
"""
