#!/bin/sh
# Install the Debian packages whose programs the tests use as real peers.
# Each entry is "command:package".
set -eu
NEEDED="wrk:wrk tshark:tshark gnutls-cli:gnutls-bin dnsmasq:dnsmasq-base ip:iproute2 curl:curl h2load:nghttp2-client git:git openssl:openssl ping:iputils-ping ethtool:ethtool gcc:gcc /usr/include/zlib.h:zlib1g-dev /usr/include/sqlite3.h:libsqlite3-dev /usr/include/crypt.h:libcrypt-dev qemu-system-x86_64:qemu-system-x86 qemu-system-aarch64:qemu-system-arm qemu-aarch64-static:qemu-user-static aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu /usr/aarch64-linux-gnu/include/bits/libc-header-start.h:libc6-dev-arm64-cross dpkg-deb:dpkg sshd:openssh-server ssh:openssh-client zstd:zstd lz4:lz4 mkfs.ext4:e2fsprogs skopeo:skopeo umoci:umoci mkfs.fat:dosfstools mcopy:mtools qemu-img:qemu-utils syslinux:syslinux /usr/lib/syslinux/mbr/gptmbr.bin:syslinux-common /usr/share/ovmf/OVMF.fd:ovmf /usr/share/qemu-efi-aarch64/QEMU_EFI.fd:qemu-efi-aarch64 sgdisk:gdisk fdisk:fdisk objdump:binutils make:make flex:flex bison:bison bc:bc /usr/include/libelf.h:libelf-dev"
missing=""
for pair in $NEEDED; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    case $cmd in
        # A file (a header, firmware): present or not, executable or not.
        /*) [ -e "$cmd" ] && continue ;;
        *) { command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ]; } && continue ;;
    esac
    missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing Debian packages:$missing (run as root, or install them)" >&2
    exit 0
fi
echo "system-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
