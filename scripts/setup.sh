#!/bin/bash
# Install what MIGOS's build and tests need on a Debian 12 host (run as root). Idempotent:
# apt runs only when a package is missing, pip only when requirements.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST_PACKAGES=(
  # build
  apt dpkg-dev tar proot qemu-user-static u-boot-tools device-tree-compiler kmod zstd xz-utils
  debian-archive-keyring gpg gpgv python3 python3-venv git
  # the signed test mirrors (apt-ftparchive)
  apt-utils
  # U-Boot for the Pi, cross-compiled from Debian's source package
  make gcc gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf bison flex bc libssl-dev libgnutls28-dev
  # disks, boot and tests
  qemu-system-arm u-boot-qemu dosfstools mtools e2fsprogs fdisk util-linux pigz cpio
  network-manager wpasupplicant
  # fleet operation and publishing: MQTT broker for the tests, test certificates, signatures
  mosquitto openssl gnupg
)

missing=()
for p in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: installing ${missing[*]} needs root; run as root" >&2; exit 2; }
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
want=$(sha256sum requirements.txt | cut -d' ' -f1)
have=$(cat .venv/.requirements.sha256 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  echo "$want" > .venv/.requirements.sha256
fi
