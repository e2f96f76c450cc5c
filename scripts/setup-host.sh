#!/usr/bin/env bash
# Installs the host packages the harness needs, only those that are missing. Debian 12, as root (or with sudo).
# Safe to run again: does nothing when all is there. Works on a minimal Debian (debootstrap --variant=minbase).
#
#   scripts/setup-host.sh run    what `make run` needs: Python with venv, mingw-w64 (drivers), Wine (the embedded guest)
#   scripts/setup-host.sh all    everything (`make test`, `make lint`): also a C compiler and Python headers (libvirt-python
#                                compiles), QEMU, libvirt, OVMF, swtpm, sshd, xorriso, osslsigncode, Chromium (the report's browser test)
set -euo pipefail

profile=${1:-all}
case "$profile" in run|all) ;; *) echo "usage: $0 [run|all]" >&2; exit 2 ;; esac

need=()
have() { command -v "$1" >/dev/null 2>&1; }
deb() { dpkg -s "$1" >/dev/null 2>&1; }

# -- what `make run` needs ------------------------------------------------------------------------------
have python3 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
have make || need+=(make)
have x86_64-w64-mingw32-gcc || need+=(gcc-mingw-w64-x86-64 binutils-mingw-w64-x86-64)
[ -f /usr/share/mingw-w64/include/ddk/ntddk.h ] || need+=(mingw-w64-x86-64-dev)
{ [ -x /usr/lib/wine/wine64 ] && [ -x /usr/lib/wine/wineserver ] ; } || need+=(wine wine64)
[ -f /usr/lib/x86_64-linux-gnu/wine/x86_64-windows/ntoskrnl.exe ] || need+=(libwine)
have pgrep || need+=(procps)   # the Wine session's processes are found and ended by the harness

if [ "$profile" = all ]; then
  # libvirt-python (pip) compiles: a C compiler, libc headers, the headers of the python3 in use, pkg-config, libvirt-dev.
  have gcc || need+=(gcc)
  [ -f /usr/include/stdio.h ] || need+=(libc6-dev)
  python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    >/dev/null 2>&1 || need+=(python3-dev)
  pkg-config --exists libvirt 2>/dev/null || need+=(libvirt-dev pkg-config)
  have osslsigncode || need+=(osslsigncode)
  have i686-w64-mingw32-gcc || need+=(gcc-mingw-w64-i686)   # the 32-bit test image the embedded guest must refuse
  have qemu-system-x86_64 || need+=(qemu-system-x86)
  deb busybox-static || need+=(busybox-static)   # static: it runs in the stand-in initramfs
  have cpio || need+=(cpio)
  have xz || need+=(xz-utils)
  have gzip || need+=(gzip)
  have libvirtd || need+=(libvirt-daemon-system)
  have virsh || need+=(libvirt-clients)
  [ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)
  have qemu-img || need+=(qemu-utils)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  have ssh-keygen || need+=(openssh-client)
  have xorriso || need+=(xorriso)
  have swtpm || need+=(swtpm swtpm-tools)
  have openssl || need+=(openssl)
  have unshare || need+=(util-linux)
  have useradd || need+=(passwd)
  have chromium || need+=(chromium)   # the browser test renders the HTML report headless
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup-host: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
