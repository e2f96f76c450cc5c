#!/usr/bin/env bash
# Tries the README's two commands as a new user would: on a minimal Debian 12 (debootstrap --variant=minbase plus
# make, git and ca-certificates), as root, with this repository's committed HEAD cloned into /root/kcb.
# Prints the result of `make run` and of `bash .ci/run` (the README's test command) and exits non-zero if either fails.
#
#   scripts/fresh-machine-check.sh [--keep] [--root DIR]
#
# DIR (default /var/tmp/kcb-fresh-root) is made anew each time from a cached minimal root
# (/var/cache/kcb-harness/bookworm-minbase.tar, made once with debootstrap, ~2 min). --keep leaves it for inspection.
# Needs root, debootstrap (installed if missing) and the Debian mirror of this machine's apt sources.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
root=/var/tmp/kcb-fresh-root
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=yes ;;
    --root) root=$2; shift ;;
    *) echo "usage: $0 [--keep] [--root DIR]" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "fresh-machine-check: run as root (it builds a chroot)" >&2; exit 2; }
git -C "$here" diff --quiet HEAD || echo "fresh-machine-check: note: uncommitted changes are not part of the clone" >&2

cache=/var/cache/kcb-harness/bookworm-minbase.tar
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1)
mirror=${mirror:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}

cleanup() {
  # Every process living in the chroot ends before its mounts go.
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    if [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  sleep 1
  for mount in $(awk -v r="$root" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$mount" 2>/dev/null || true
  done
  [ -n "$keep" ] || rm -rf "$root"
}

if [ ! -s "$cache" ]; then
  command -v debootstrap >/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null; }
  echo "fresh-machine-check: debootstrap --variant=minbase bookworm from $mirror (once)" >&2
  staging=$(mktemp -d /var/tmp/kcb-minbase.XXXXXX)
  chmod 755 "$staging"  # it becomes the chroot's "/": mktemp's 0700 would close everything to non-root users
  debootstrap --variant=minbase --include=make,git,ca-certificates bookworm "$staging" "$mirror" >/dev/null
  mkdir -p "$(dirname "$cache")"
  tar -C "$staging" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
  rm -rf "$staging"
fi

[ ! -e "$root" ] || { keep_asked=$keep; keep=""; cleanup; keep=$keep_asked; }  # made anew: a kept root goes now
trap cleanup EXIT
mkdir -p "$root"
tar -C "$root" -xf "$cache"
chmod 755 "$root"

# This workplace's network: its apt sources and CA, and pip's settings (a user's machine has its own).
cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/" 2>/dev/null && rm -f "$root/etc/apt/sources.list" || true
cp /etc/apt/apt.conf.d/99* "$root/etc/apt/apt.conf.d/" 2>/dev/null || true
cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
[ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$root/etc/pip.conf"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# The chroot's root is a mount point (unshare --propagation needs one), with the kernel's file systems.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mkdir -p "$root/run" && mount -t tmpfs tmpfs "$root/run"

git clone -q "$here" "$root/root/kcb"

inside() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c "$1"
}
inside 'update-ca-certificates >/dev/null 2>&1 || true'

log=$root/root/fresh-machine-check
mkdir -p "$log"
results=()
status=0
for step in "make run" "bash .ci/run"; do
  started=$(date +%s)
  set +e
  inside "cd /root/kcb && $step" > "$log/$(echo "$step" | tr ' /.' '___').log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - started ))
  echo "===== $step: exit $rc after ${took}s; last lines:"
  tail -n 12 "$log/$(echo "$step" | tr ' /.' '___').log"
  results+=("$step: exit $rc (${took}s)")
  [ "$rc" -eq 0 ] || status=1
done
echo "===== fresh-machine-check on minimal Debian 12, clone in /root/kcb ($(git -C "$here" rev-parse --short HEAD)):"
printf '  %s\n' "${results[@]}"
[ -z "$keep" ] || echo "  logs and root kept in $root (root/fresh-machine-check/)"
exit "$status"
