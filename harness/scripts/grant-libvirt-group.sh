#!/usr/bin/env bash
# Makes USER (created if missing) a member of group `libvirt` able to use qemu:///system. On hosts
# without systemd there is no polkit, so libvirtd's socket is opened to the group in libvirtd.conf
# (libvirtd is restarted once when that changes). Run as root.
set -euo pipefail
user="${1:?usage: grant-libvirt-group.sh USER}"
conf=/etc/libvirt/libvirtd.conf

getent group libvirt >/dev/null || groupadd --system libvirt
if ! id "$user" >/dev/null 2>&1; then
  useradd --system --create-home --shell /bin/sh --groups libvirt "$user"
else
  usermod -aG libvirt "$user"
fi

[ -d /run/systemd/system ] && exit 0   # polkit's libvirt rule grants the group there

changed=0
for setting in 'unix_sock_group = "libvirt"' 'unix_sock_rw_perms = "0770"' 'auth_unix_rw = "none"'; do
  key="${setting%% =*}"
  if ! grep -qx "$setting" "$conf"; then
    sed -i "/^${key}[[:space:]]*=/d" "$conf"
    echo "$setting" >> "$conf"
    changed=1
  fi
done
if [ "$changed" = 1 ]; then
  echo "mkh setup: opened libvirtd's socket to group libvirt; restarting libvirtd"
  pkill -x libvirtd || true
  for _ in $(seq 1 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.1; done
  libvirtd -d
  for _ in $(seq 1 60); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.5; done
fi
