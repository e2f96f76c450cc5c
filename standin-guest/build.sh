#!/usr/bin/env bash
# Builds the Linux stand-in guest from Debian packages: the distribution kernel (apt-get download,
# not installed), busybox-static and the project's own static programs, as an initramfs.
#   standin-guest/build.sh OUTDIR [NULL_DEREF_DRIVERS PYTHON]  ->  OUTDIR/vmlinuz, OUTDIR/initramfs.cpio.gz
# With the null-deref driver build and the project's Python, kdtarget gets a synthetic kernel to answer a debugger's
# reads from (OUTDIR/kd/kdmachine.bin, made by harness/kd/synthetic.py; OUTDIR/kd/ntoskrnl.exe names its frames).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)

if [ ! -s "$out/vmlinuz" ] || [ ! -s "$out/modules/load-order" ]; then
  rm -rf "$out/modules"
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
  # Modules of Debian's kernel the init loads, in dependency order (modules.order-style list):
  # pvpanic (panic test), the SATA disk (crash-dump test) and the e1000e NIC (SSH through QEMU's user network).
  mkdir -p "$out/modules"
  for name in pvpanic pvpanic-mmio pvpanic-pci scsi_common scsi_mod libata libahci ahci crct10dif_common crc-t10dif crc64 \
      crc64-rocksoft t10-pi sd_mod e1000e; do
    file=$(find "$work/root/lib/modules" -name "$name.ko*" | head -n 1)
    [ -n "$file" ] || continue
    cp "$file" "$out/modules/"
    echo "$(basename "$file" | sed 's/\.xz$//')" >> "$out/modules/load-order"
  done
  for f in "$out"/modules/*.ko.xz; do [ -e "$f" ] && xz -d -f "$f"; done
  mv "$out/vmlinuz.tmp" "$out/vmlinuz"
fi

gcc -static -O2 -Wall -Wextra -Werror -o "$out/kdtarget" "$here/kdtarget.c"
rm -f "$out/kd/kdmachine.bin"
if [ -n "${2:-}" ] && [ -n "${3:-}" ] && [ -f "$2/receiver.debug" ]; then
  (cd "$here/.." && "$3" -m harness.kd.synthetic "$out/kd" "$2")
fi

# Test-only SSH keys of the stand-in (made here, never committed): its host key, and the key the tests log in with.
mkdir -p "$out/ssh"
[ -s "$out/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C kcb-standin-host -f "$out/ssh/host_ed25519"
[ -s "$out/ssh/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C kcb-standin-client -f "$out/ssh/client_ed25519"

root=$(mktemp -d)
trap 'rm -rf "$root" ${work:+"$work"}' EXIT
mkdir -p "$root/bin" "$root/lib/modules"
cp /bin/busybox "$root/bin/busybox"
cp "$here/init" "$root/init"
cp "$out/kdtarget" "$root/kdtarget"
[ -f "$out/kd/kdmachine.bin" ] && cp "$out/kd/kdmachine.bin" "$root/kdmachine.bin"
cp "$out"/modules/*.ko "$out/modules/load-order" "$root/lib/modules/" 2>/dev/null || true
# OpenSSH's sshd and sftp-server from the host (Debian 12 too), with the libraries they link.
mkdir -p "$root/usr/sbin" "$root/usr/lib/openssh" "$root/etc/ssh" "$root/run/sshd" "$root/root" "$root/dumps"
cp /usr/sbin/sshd "$root/usr/sbin/sshd"
cp /usr/lib/openssh/sftp-server "$root/usr/lib/openssh/sftp-server"
for lib in $(ldd /usr/sbin/sshd /usr/lib/openssh/sftp-server | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | sort -u) \
    $(ls /lib/x86_64-linux-gnu/libnss_files.so.2 2>/dev/null); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp "$out/ssh/host_ed25519" "$root/etc/ssh/host_ed25519"
cp "$out/ssh/client_ed25519.pub" "$root/etc/ssh/authorized_keys"
cp "$here/sshd_config" "$root/etc/ssh/sshd_config"
printf 'root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\n' > "$root/etc/passwd"
printf 'root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\n' > "$root/etc/shadow"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
cp "$here/kcb-crash" "$root/kcb-crash"
cp "$here/kcb-sc" "$root/kcb-sc"
chmod 600 "$root/etc/ssh/host_ed25519" "$root/etc/shadow"
chmod +x "$root/kcb-crash" "$root/kcb-sc"
chmod +x "$root/init" "$root/kdtarget"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 > "$out/initramfs.cpio.gz.tmp")
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
