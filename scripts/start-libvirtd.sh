#!/usr/bin/env bash
# Makes sure a libvirt daemon answers on qemu:///system (no systemd here: the project starts it).
# Prints "started libvirtd" / "started virtlogd" for what it started, so a caller can stop them again.
#
# On machines whose CPU has no vmx/svm but where /dev/kvm exists (a nested PVM device: 64-bit guests
# do not boot with it), libvirt re-probes QEMU on almost every call (seconds each) because its cached
# capabilities never match the KVM device it sees. There the daemon runs in a private mount
# namespace without /dev/kvm (and without libvirt's own per-VM /dev namespace, which cannot be
# built on top of it); VMs then use TCG, which is all that works on such a machine anyway.
set -euo pipefail

if virsh -c qemu:///system version >/dev/null 2>&1; then
  exit 0
fi
mkdir -p /run/libvirt /var/log/libvirt/qemu
# libvirt runs swtpm (the VMs' TPM) as user tss; the local CA's state must be tss's, as Debian's package
# intends (a swtpm run as root, e.g. by a daemon started before swtpm was installed, leaves root-owned files).
if id tss >/dev/null 2>&1 && [ -d /var/lib/swtpm-localca ]; then
  chown -R tss:root /var/lib/swtpm-localca
fi
# Whatever this script started is stopped again unless libvirtd ends up answering.
started_virtlogd=""
cleanup() {
  [ -n "$started_virtlogd" ] || return 0
  for _ in $(seq 1 50); do [ -s /run/virtlogd.pid ] && break; sleep 0.1; done  # a daemon writes it after forking
  [ -s /run/virtlogd.pid ] || return 0
  pid=$(cat /run/virtlogd.pid)
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done  # gone before we return
  kill -9 "$pid" 2>/dev/null || true
}
trap cleanup EXIT
# By its socket, not its process name: a virtlogd of another root (a chroot, a container sharing pids) does not count.
# And by connecting to it: a daemon that was killed (a machine whose processes ended, a crash) leaves the socket file.
virtlogd_answers() {
  python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' /run/libvirt/virtlogd-sock 2>/dev/null
}
if ! virtlogd_answers; then
  rm -f /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock
  virtlogd -d
  started_virtlogd=yes
  echo "started virtlogd"
fi

if [ -e /dev/kvm ] && ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
  state=/run/kcb-libvirt
  mkdir -p "$state/dev"
  { cat /etc/libvirt/qemu.conf; echo 'namespaces = [ ]'; } > "$state/qemu.conf"
  unshare -m --propagation private sh -c "
    mount -t tmpfs -o mode=755 tmpfs '$state/dev' &&
    cp -a /dev/. '$state/dev/' 2>/dev/null; rm -f '$state/dev/kvm';
    for m in pts shm mqueue hugepages; do mountpoint -q /dev/\$m && mount --rbind /dev/\$m '$state/dev/'\$m; done;
    mount --rbind '$state/dev' /dev && mount --bind '$state/qemu.conf' /etc/libvirt/qemu.conf && exec libvirtd -d" ||
    { echo "libvirtd did not come up (it failed to start)" >&2; exit 1; }
else
  libvirtd -d || { echo "libvirtd did not come up (it failed to start)" >&2; exit 1; }
fi
for _ in $(seq 1 100); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "started libvirtd"
    started_virtlogd=""  # it stays: libvirtd uses it
    exit 0
  fi
  sleep 0.2
done
echo "libvirtd did not come up" >&2
exit 1
