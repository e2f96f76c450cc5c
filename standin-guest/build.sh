#!/usr/bin/env bash
# Builds the Linux stand-in guest from Debian packages: the distribution kernel (apt-get download,
# not installed), busybox-static and the project's own static programs, as an initramfs.
#   standin-guest/build.sh OUTDIR   ->  OUTDIR/vmlinuz, OUTDIR/initramfs.cpio.gz
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)

if [ ! -s "$out/vmlinuz" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -qq "$pkg" 2>/dev/null)
  dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
  cp "$work"/root/boot/vmlinuz-* "$out/vmlinuz.tmp"
  # pvpanic for the panic test: a module in Debian's kernel
  mkdir -p "$out/modules"
  find "$work/root/lib/modules" -name 'pvpanic*.ko*' -exec cp {} "$out/modules/" \;
  for f in "$out"/modules/*.ko.xz; do [ -e "$f" ] && xz -d -f "$f"; done
  mv "$out/vmlinuz.tmp" "$out/vmlinuz"
fi

gcc -static -O2 -Wall -Wextra -Werror -o "$out/kdtarget" "$here/kdtarget.c"

root=$(mktemp -d)
trap 'rm -rf "$root" ${work:+"$work"}' EXIT
mkdir -p "$root/bin" "$root/lib/modules"
cp /bin/busybox "$root/bin/busybox"
cp "$here/init" "$root/init"
cp "$out/kdtarget" "$root/kdtarget"
cp "$out"/modules/*.ko "$root/lib/modules/" 2>/dev/null || true
chmod +x "$root/init" "$root/kdtarget"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$out/initramfs.cpio.gz.tmp")
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
