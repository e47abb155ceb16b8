#!/usr/bin/env bash
# Install everything virtnbd needs on Debian 12 (as root), build it, and start libvirtd if needed.
# Safe to run twice: packages already present are not reinstalled, npm ci only when needed.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  nbdkit nbdkit-plugin-dev            # NBD server + plugin API (our C shim)
  libnbd-dev libnbd-bin python3-libnbd # NBD client library (native addon), nbdcopy/nbdinfo/nbdfuse/nbdsh
  qemu-utils qemu-system-x86           # qemu-img, qemu-nbd, qemu-io; TCG VMs
  libvirt-daemon-system libvirt-clients libvirt-dev
  liblz4-dev pkg-config build-essential python3
  e2fsprogs fuse3                      # demo: mkfs.ext4 -d, debugfs; nbdfuse
  time                                 # /usr/bin/time -v: peak RSS in bench/backup.ts
  openssl                              # test certificates for the NBD TLS test
  virtnbdbackup                        # the original tool (1.9.15), for compatibility tests
  openssh-server openssh-client        # remote mode tests: sshd on 127.0.0.1
  linux-image-amd64 busybox-static     # boot tests: a tiny guest (Debian kernel + initrd, busybox root)
  fdisk util-linux                     # --mount: partition tables, losetup
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null || (( $(node -p 'process.versions.node.split(".")[0]') < 20 )); then
  echo "setup: Node.js >= 20 is required" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.virtnbd-lock.sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
npm run -s build >/dev/null

# libvirtd without systemd (ENVIRONMENT.md): start only what is not running.
if [[ ${VIRTNBD_NO_LIBVIRT:-0} != 1 ]]; then
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
  for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
  virsh -c qemu:///system version >/dev/null 2>&1 || { echo "setup: libvirtd does not answer" >&2; exit 1; }
fi
echo "setup: ready" >&2
