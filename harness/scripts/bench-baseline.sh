#!/usr/bin/env bash
# The baseline for `mkh bench`: the same steps as mkh, done by hand with virsh and ssh, on the same
# guest. Input: a directory holding nat.xml, priv.xml, domain.xml, names.env (NAT, PRIV, DOMAIN,
# MAC_NAT, MAC_PRIV) and the SSH key id_ed25519. Output, one line:
#   networks=S define_start=S first_lease=S leases=S ssh=S teardown=S
set -euo pipefail
dir="$1"
# shellcheck disable=SC1091
source "$dir/names.env"
v() { virsh -q -c "${MKH_LIBVIRT_URI:-qemu:///system}" "$@" >/dev/null; }
now() { date +%s.%N; }
lease_ip() { # network mac
  virsh -q -c "${MKH_LIBVIRT_URI:-qemu:///system}" net-dhcp-leases "$1" --mac "$2" 2>/dev/null \
    | awk '{print $5}' | cut -d/ -f1 | head -n1
}

t0=$(now)
v net-define "$dir/nat.xml"; v net-start "$NAT"
v net-define "$dir/priv.xml"; v net-start "$PRIV"
t1=$(now)
v define "$dir/domain.xml"; v start "$DOMAIN"
t2=$(now)
ip_nat=""; ip_priv=""; t_first=""
for _ in $(seq 1 1200); do
  [ -n "$ip_priv" ] || ip_priv=$(lease_ip "$PRIV" "$MAC_PRIV")
  [ -n "$ip_nat" ] || ip_nat=$(lease_ip "$NAT" "$MAC_NAT")
  if [ -z "$t_first" ] && { [ -n "$ip_priv" ] || [ -n "$ip_nat" ]; }; then t_first=$(now); fi
  [ -n "$ip_priv" ] && [ -n "$ip_nat" ] && break
  sleep 0.1
done
t3=$(now)
for ip in "$ip_priv" "$ip_nat"; do
  for _ in $(seq 1 600); do
    ssh -q -i "$dir/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o ConnectTimeout=5 -o BatchMode=yes "docker@$ip" true && break
    sleep 0.3
  done
done
t4=$(now)
v destroy "$DOMAIN"; v undefine "$DOMAIN"
v net-destroy "$NAT"; v net-undefine "$NAT"
v net-destroy "$PRIV"; v net-undefine "$PRIV"
t5=$(now)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" -v f="$t5" -v g="${t_first:-$t3}" 'BEGIN {
  printf "networks=%.3f define_start=%.3f first_lease=%.3f leases=%.3f ssh=%.3f teardown=%.3f\n", b-a, c-b, g-c, d-c, e-d, f-e }'
