#!/usr/bin/env bash
# Prepares this host for mkh: installs the Debian packages it needs, starts virtlogd and libvirtd
# when they are not running, and waits until libvirt answers. Safe to run again: it only does
# what is missing.
#
# With MKH_SETUP_REMOTE=1 (the test command sets it) it also starts an sshd of its own on
# 127.0.0.1:2222 only, with a key made for it, so that libvirt can be reached as a remote host
# over qemu+ssh (see remote_uri below); root's known_hosts learns that sshd's host key.
set -euo pipefail

packages=(libvirt-daemon-system qemu-system-x86 dnsmasq-base libvirt-dev pkg-config
          iputils-ping iproute2 busybox-static openssh-client openssl curl tini)
[ "${MKH_SETUP_REMOTE:-}" = 1 ] && packages+=(openssh-server)
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
  # Installed here only for mkh's own sshd below: the package's service (all addresses, port
  # 22), if its installation started one, is stopped and kept off.
  if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
    if [ -d /run/systemd/system ]; then
      as_root systemctl disable --now ssh.service ssh.socket 2>/dev/null || true
    elif [ -f /run/sshd.pid ]; then
      as_root kill "$(cat /run/sshd.pid)" 2>/dev/null || true
    fi
  fi
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

answers() {
  for _ in $(seq 1 60); do
    virsh -c "$1" version >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "mkh setup: libvirt does not answer at $1 after 30 s" >&2
  virsh -c "$1" version >&2 || true
  return 1
}
answers "$uri"
[ "${MKH_SETUP_REMOTE:-}" = 1 ] || exit 0

# The loopback "remote" libvirt host: an sshd of its own (its own config, host key and
# authorized key), never the system's.
# (sshd's StrictModes wants root-owned directories up to it: not under /var/tmp.)
dir=/var/lib/mkh-remote-ssh
port=2222
as_root mkdir -p "$dir"
as_root chmod 755 "$dir"
[ -f "$dir/host_ed25519" ] || as_root ssh-keygen -q -t ed25519 -N '' -C mkh-remote-host -f "$dir/host_ed25519"
[ -f "$dir/id_ed25519" ] || as_root ssh-keygen -q -t ed25519 -N '' -C mkh-remote-client -f "$dir/id_ed25519"
# The client key is for whoever runs the tests as root.
as_root cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
as_root tee "$dir/sshd_config" >/dev/null <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_ed25519
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile $dir/sshd.pid
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
CONF
as_root mkdir -p /run/sshd
if ! { [ -f "$dir/sshd.pid" ] && as_root kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null; }; then
  as_root /usr/sbin/sshd -f "$dir/sshd_config"
fi
known=/root/.ssh/known_hosts
as_root mkdir -p -m 700 /root/.ssh
as_root ssh-keygen -q -R "[127.0.0.1]:$port" -f "$known" >/dev/null 2>&1 || true
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" | as_root tee -a "$known" >/dev/null
remote_uri="qemu+ssh://root@127.0.0.1:$port/system?keyfile=$dir/id_ed25519"
answers "$remote_uri"

