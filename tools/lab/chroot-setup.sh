#!/bin/bash
# Runs inside the guest root (chroot) at build time: the kernel, its headers and
# ZFS built by DKMS for that kernel. Image and headers are named by the exact
# version, in one apt run (LAB-FACTS: the metapackage moves with updates).
set -euo pipefail
apt-get update -qq
kver=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' \
       | awk '{print $1}' | sed 's/linux-image-//' | sort -V | tail -1)
[ -n "$kver" ] || { echo "no 6.1 kernel found" >&2; exit 1; }
echo "guest kernel: $kver"
apt-get install -y --no-install-recommends "linux-image-$kver" "linux-headers-$kver" \
    zfs-dkms zfsutils-linux dkms build-essential
ls "/lib/modules/$kver/updates/dkms/zfs.ko"* >/dev/null
# Initiator name and LIO's config directory (LAB-FACTS: rtslib wants /etc/target).
mkdir -p /etc/target /etc/iscsi
[ -s /etc/iscsi/initiatorname.iscsi ] || \
    echo "InitiatorName=iqn.2004-10.com.ubuntu:01:zfslab" > /etc/iscsi/initiatorname.iscsi
echo zfslab > /etc/hostname
apt-get clean
