#!/usr/bin/env bash
# Installs the host packages the harness needs, only those that are missing.
# Debian 12, as root (or with sudo). Safe to run again: does nothing when all is there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }

have x86_64-w64-mingw32-gcc || need+=(gcc-mingw-w64-x86-64 binutils-mingw-w64-x86-64)
[ -f /usr/share/mingw-w64/include/ddk/ntddk.h ] || need+=(mingw-w64-x86-64-dev)
{ [ -x /usr/lib/wine/wine64 ] && [ -x /usr/lib/wine/wineserver ] ; } || need+=(wine wine64)
[ -f /usr/lib/x86_64-linux-gnu/wine/x86_64-windows/ntoskrnl.exe ] || need+=(libwine)
have osslsigncode || need+=(osslsigncode)
have qemu-system-x86_64 || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)   # static: it runs in the stand-in initramfs
have cpio || need+=(cpio)
have xz || need+=(xz-utils)
have dpkg-deb || need+=(dpkg)
have libvirtd || need+=(libvirt-daemon-system)
have virsh || need+=(libvirt-clients)
pkg-config --exists libvirt 2>/dev/null || need+=(libvirt-dev pkg-config)   # libvirt-python compiles against it
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)
have qemu-img || need+=(qemu-utils)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
have ssh-keygen || need+=(openssh-client)
have xorriso || need+=(xorriso)
have swtpm || need+=(swtpm swtpm-tools)
have openssl || need+=(openssl)
have make || need+=(make)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup-host: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
