#!/usr/bin/env bash
# Builds a Kubernetes node's binaries from Debian's `kubernetes` source package (1.20.x, vendored,
# so it builds offline from the Debian mirror alone) and caches them: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet (static, dockershim included), kube-proxy, and
# the pause container's program. No registry reachable from here ships them; building them is the
# only way to get them.
#
#   build-kubernetes.sh [CACHE_DIR]     CACHE_DIR defaults to ${MKH_CACHE_DIR:-/var/tmp/mkh-cache-<uid>}, as mkh's
#
# The last line on stdout is the absolute path of the cached directory; everything else goes to
# stderr. Layout:
#   CACHE_DIR/kubernetes/<debian source version>/{kube-apiserver,kubelet,...,pause}
#   CACHE_DIR/kubernetes/current -> <debian source version>
#
# Once built, a run only resolves `current` and prints it: no apt, no network. The build (10-15
# minutes on 2 cores) holds a lock, so concurrent callers wait for one build instead of racing,
# and the directory appears in the cache only by an atomic rename, never half-written.
# It also makes sure Debian's etcd-server (/usr/bin/etcd, 3.4) is installed: the API server is
# useless without it.
set -euo pipefail

# Keep stdout for the one result line.
exec 3>&1 1>&2

cache_dir="${1:-${MKH_CACHE_DIR:-/var/tmp/mkh-cache-$(id -u)}}"
root="$cache_dir/kubernetes"
current="$root/current"
deb_src_list=/etc/apt/sources.list.d/mkh-deb-src.sources
go_bin=/usr/lib/go-1.19/bin
reflect2_src=/usr/share/gocode/src/github.com/modern-go/reflect2
packages=(golang-1.19-go rsync etcd-server dpkg-dev make gcc libc6-dev golang-github-modern-go-reflect2-dev)
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { echo "build-kubernetes: $*"; }
die() { echo "build-kubernetes: error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Prints the cached directory and exits, if there is one.
print_cached_and_exit() {
  local dir b
  dir="$(readlink -f "$current" 2>/dev/null)" || return 0
  [ -d "$dir" ] || return 0
  for b in "${binaries[@]}" pause; do
    [ -f "$dir/$b" ] && [ -x "$dir/$b" ] || return 0
  done
  echo "$dir" >&3
  exit 0
}

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

apt_get() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -q "$@"
}

ensure_packages() {
  local missing
  mapfile -t missing < <(missing_packages "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt_get update || die "apt-get update failed; check /etc/apt/sources.list.d and the mirror"
  apt_get install -y "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed; try it by hand to see why"
}

ensure_deb_src() {
  if [ ! -f "$deb_src_list" ]; then
    log "adding the deb-src entry $deb_src_list"
    # deb822 form: a one-line `deb-src` list conflicts with the Signed-By of the machine's
    # deb822 `deb` entry and makes apt-get update fail.
    as_root tee "$deb_src_list" >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  if ! apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes$'; then
    log "apt-get update (source index for kubernetes is missing)"
    apt_get update || die "apt-get update failed after adding $deb_src_list; check that file and the mirror"
    apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes$' \
      || die "apt knows no source package 'kubernetes'; check $deb_src_list (Suites must be a release that has it, e.g. bookworm)"
  fi
}

# Fast path: no lock, no apt. `current` only ever changes by an atomic rename.
if [ -e "$current" ]; then
  # The API server needs etcd; if that got removed, reinstall it (the only apt call here).
  [ -x /usr/bin/etcd ] || ensure_packages etcd-server
  print_cached_and_exit
fi

mkdir -p "$root" || die "cannot create $root; pass a writable CACHE_DIR or set MKH_CACHE_DIR"
root="$(cd "$root" && pwd -P)"
current="$root/current"
{ exec 9>"$root/.lock"; } 2>/dev/null \
  || die "cannot write $root/.lock; run as the owner of $root or pass another CACHE_DIR"
if ! flock -n 9; then
  log "another build holds $root/.lock; waiting for it"
  flock 9
fi
# Someone else may have finished while we waited.
print_cached_and_exit

# Leftovers of a build that was killed.
rm -rf "$root"/work.*

ensure_packages "${packages[@]}"
ensure_deb_src
[ -x "$go_bin/go" ] || die "$go_bin/go is missing although golang-1.19-go is installed"

work="$(mktemp -d "$root/work.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

start=$SECONDS
log "fetching the kubernetes source package into $work"
# apt fetches as user _apt, which cannot write into a root-owned work dir; as root, fetch as root
# instead of warning about it.
sandbox=()
[ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
(cd "$work" && apt-get -q "${sandbox[@]}" source kubernetes) \
  || die "apt-get source kubernetes failed; check $deb_src_list and run 'apt-get update'"

dsc="$(find "$work" -maxdepth 1 -name 'kubernetes_*.dsc' | head -n1)"
[ -n "$dsc" ] || die "apt-get source left no kubernetes_*.dsc in $work"
deb_version="$(sed -n 's/^Version: //p' "$dsc" | head -n1)"
[ -n "$deb_version" ] || die "no Version: line in $dsc"
src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
[ -n "$src" ] || die "apt-get source did not unpack a kubernetes-* directory in $work"

# Kubernetes 1.20 vendors github.com/modern-go/reflect2 v1.0.1, which hard-codes the layout of
# Go's map iterator. Go 1.18 changed that layout, so built with Go 1.19 the API server dies with
# "unexpected fault address 0x0 / fatal error: fault" in reflect2.(*UnsafeMapType).UnsafeIterate
# as soon as it JSON-encodes a map (here about a second after /readyz first said ok). v1.0.2 fixes
# it; Debian ships it, so swap it in (and name it in go.mod and vendor/modules.txt).
vendored_reflect2="$src/vendor/github.com/modern-go/reflect2"
[ -d "$vendored_reflect2" ] || die "$vendored_reflect2 is missing; the source layout changed, check the recipe"
[ -f "$reflect2_src/go_above_118.go" ] \
  || die "$reflect2_src has no go_above_118.go; golang-github-modern-go-reflect2-dev must be >= 1.0.2"
log "replacing vendored reflect2 v1.0.1 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
find "$vendored_reflect2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
find "$reflect2_src" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
  -exec cp -t "$vendored_reflect2" {} +
sed -i 's|github.com/modern-go/reflect2 v1.0.1|github.com/modern-go/reflect2 v1.0.2|g' \
  "$src/go.mod" "$src/vendor/modules.txt"

# Upstream version for the binary's --version: drop the epoch and Debian revision, and Debian's
# "+really" marker (e.g. 1.20.5+really1.20.2-1 is upstream 1.20.2).
upstream="${deb_version#*:}"
upstream="${upstream%-*}"
upstream="${upstream##*+really}"
upstream="${upstream%%+*}"
upstream="${upstream%%~*}"
whats=()
for b in "${binaries[@]}"; do whats+=("cmd/$b"); done
log "building ${binaries[*]} v$upstream from Debian source $deb_version (10-15 minutes, niced)"

# Keep Go's caches and temporary files in the work dir: /tmp may be small, and they go away
# with the source tree.
build_log="$root/build.log"
if ! (cd "$src" && \
      env PATH="$go_bin:$PATH" GOFLAGS=-mod=vendor GOCACHE="$work/gocache" \
          GOTMPDIR="$work" TMPDIR="$work" GOTOOLCHAIN=local \
        nice -n 10 make WHAT="${whats[*]}" KUBE_STATIC_OVERRIDES=kubelet \
          KUBE_GIT_VERSION="v$upstream" KUBE_GIT_TREE_STATE=clean) >"$build_log" 2>&1; then
  tail -n 30 "$build_log"
  die "make WHAT=\"${whats[*]}\" failed; full log in $build_log (the source tree is removed; run again after fixing the cause)"
fi
staged="$work/staged"
mkdir -p "$staged"
for b in "${binaries[@]}"; do
  [ -x "$src/_output/bin/$b" ] || die "the build succeeded but left no $src/_output/bin/$b; see $build_log"
  cp "$src/_output/bin/$b" "$staged/$b"
done
# The pause container's program, as the upstream image builds it (build/pause/Makefile).
pause_c="$src/build/pause/linux/pause.c"
[ -f "$pause_c" ] || die "$pause_c is missing; the source layout changed, check the recipe"
gcc -Os -Wall -Werror -static -DVERSION="v$upstream-mkh" -o "$staged/pause" "$pause_c" \
  || die "gcc could not build $pause_c statically (is libc6-dev installed?)"
chmod 0755 "$staged"/*
log "built in $((SECONDS - start)) s; source tree and build output took $(du -sh "$work" | cut -f1)"

# A finished directory replaces any older one of this version whole, then `current` points at it.
version_dir="$root/$deb_version"
rm -rf "$version_dir.old"
[ -e "$version_dir" ] && mv -f "$version_dir" "$version_dir.old"
mv -f "$staged" "$version_dir"
rm -rf "$version_dir.old"
ln -sfn "$deb_version" "$root/.current.tmp.$$"
mv -fT "$root/.current.tmp.$$" "$current"

cleanup
trap - EXIT INT TERM HUP
echo "$version_dir" >&3
