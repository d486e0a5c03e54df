#!/usr/bin/env bash
# Prepares this host for mkh: installs the Debian packages it needs, starts virtlogd and libvirtd
# when they are not running, and waits until libvirt answers. Safe to run again: it only does
# what is missing.
set -euo pipefail

packages=(libvirt-daemon-system qemu-system-x86 dnsmasq-base libvirt-dev pkg-config
          iputils-ping iproute2 busybox-static openssh-client openssl curl tini)
uri="${MKH_LIBVIRT_URI:-${LIBVIRT_DEFAULT_URI:-qemu:///system}}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "mkh setup: installing ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if [ -d /run/systemd/system ]; then
  as_root systemctl start virtlogd.socket libvirtd.socket 2>/dev/null \
    || as_root systemctl start virtlogd libvirtd
else
  # No systemd (containers, CI sandboxes): start the daemons by hand. Each exits non-zero if an
  # instance already runs.
  pgrep -x virtlogd >/dev/null || as_root virtlogd -d || true
  # libvirtd under tini as a subreaper: QEMU daemonizes, so its parent becomes the nearest
  # subreaper, and libvirt's destroy waits until the exited QEMU is reaped. Without one that is
  # PID 1, which in a sandbox may reap only every second or two (systemd reaps at once).
  if ! pgrep -x libvirtd >/dev/null; then
    as_root setsid tini -s -- libvirtd </dev/null >>/var/log/mkh-libvirtd.log 2>&1 &
  fi
fi

for _ in $(seq 1 60); do
  if virsh -c "$uri" version >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "mkh setup: libvirt does not answer at $uri after 30 s" >&2
virsh -c "$uri" version >&2 || true
exit 1
