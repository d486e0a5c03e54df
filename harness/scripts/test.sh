#!/usr/bin/env bash
# The test command. On a fresh Debian host it installs and starts what the tests need, runs the
# whole suite under cargo-nextest, and finally fails if the run left any object of mkh's in
# libvirt. Objects of other owners (e.g. an environment brought up with `mkh up`) are reported,
# never removed. Extra arguments go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "$0")/../.."

# With the loopback "remote" libvirt host (an sshd of its own on 127.0.0.1:2222) for the
# tests of a libvirt reached over qemu+ssh.
MKH_SETUP_REMOTE=1 harness/scripts/setup-host.sh

# The non-root check runs as a user in group `libvirt`. Without systemd there is no polkit to
# grant that group libvirt's socket, so libvirtd's own socket settings do (and libvirtd restarts).
if [ "$(id -u)" = 0 ]; then
  harness/scripts/grant-libvirt-group.sh mkh-test
  export MKH_TEST_USER=mkh-test
fi

# Build (or find) the guest image once, before tests that boot it run in parallel.
cargo run --quiet -p mkh-cli -- image

# The minikube stand-in runs a real Kubernetes, built from Debian's kubernetes source package
# once (about 10-15 minutes on 2 cores) and cached, where the stand-in finds it; etcd comes
# from Debian's etcd-server. Built here, before the tests, so that no test waits for it.
harness/scripts/build-kubernetes.sh >/dev/null

# Every object the run creates records this id (child processes inherit it).
export MKH_RUN_ID="${MKH_RUN_ID:-test-$(date -u +%Y%m%dT%H%M%SZ)-$$}"
profile=default
[ "${CI:-}" = true ] && profile=ci

status=0
cargo nextest run --workspace --profile "$profile" "$@" || status=$?
# Tests that need what a plain host may lack, and that this host has now.
if [ -n "${MKH_TEST_USER:-}" ]; then
  cargo nextest run --workspace --profile "$profile" --run-ignored only \
    -E 'test(/^a_non_root_libvirt_user_/)' || status=$?
fi

# The tests of a libvirt host reached over SSH, through the sshd set up above.
cargo nextest run --workspace --profile "$profile" --run-ignored only \
  -E 'test(/^over_ssh_/)' || status=$?

# The reliability test that restarts libvirtd runs alone, after everything else.
cargo nextest run --workspace --profile "$profile" --run-ignored only --test-threads 1 \
  -E 'test(/^alone_/)' || status=$?

echo "== libvirt objects left by run $MKH_RUN_ID"
cargo run --quiet -p mkh-cli -- audit --run "$MKH_RUN_ID" || status=1
exit $status
