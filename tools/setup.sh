#!/usr/bin/env bash
# Set up a fresh Debian machine (as root) for mptcplab: system tools, then the package itself.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v tcpdump  >/dev/null || need+=(tcpdump)
command -v tshark   >/dev/null || need+=(tshark)
command -v nft      >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
command -v ip       >/dev/null || need+=(iproute2)
command -v ss       >/dev/null || need+=(iproute2)
# the demos' pictures: cairo renders SVG to PNG (cairosvg), in the font the ladders measure
ldconfig -p 2>/dev/null | grep 'libcairo\.so\.2' >/dev/null || need+=(libcairo2)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || need+=(fonts-dejavu-core)
# VMs on other kernels (mptcplab vm / cases --kernel): qemu, a static busybox for virtme-ng's
# initramfs, depmod/modprobe for the guest's modules, udev for the guest's console ports.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v depmod   >/dev/null || need+=(kmod)
dpkg -s udev        >/dev/null 2>&1 || need+=(udev)
command -v file     >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[test,vm]"
