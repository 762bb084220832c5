#!/usr/bin/env bash
# Installs what memvisor needs on a Debian host and builds it; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-system-x86 kmod ksmtuned)
# What the tests drive: top in tmux, promtool on /metrics, the dashboard in headless Chromium.
# The Debian guest disk the tests boot is built with mmdebstrap and file-only tools (no loop mount).
# libvirt's daemon and virsh: the tests start libvirtd themselves (PID 1 may not be systemd).
# redis-benchmark and pgbench drive the servers in the Debian guest.
[ "${WITH_TEST_TOOLS:-0}" = 1 ] && packages+=(tmux prometheus chromium chromium-driver
  mmdebstrap e2fsprogs dosfstools mtools syslinux syslinux-common fdisk
  libvirt-daemon-system libvirt-clients redis-tools postgresql-15)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
elif ! apt-cache show busybox-static >/dev/null 2>&1; then
  apt-get update -qq  # the image build asks apt for the kernel and busybox packages
fi
# Debian's QEMU takes the place of a newer qemu-utils the machine may carry (a backport);
# the machine keeps a qemu-img, Debian's, beside it.
command -v qemu-img >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-utils

# schemathesis fuzzes the HTTP API against docs/openapi.json; it lives in its own venv.
if [ "${WITH_TEST_TOOLS:-0}" = 1 ] && [ ! -x /var/cache/memvisor/venv/bin/st ]; then
  dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed" ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
  python3 -m venv /var/cache/memvisor/venv
  /var/cache/memvisor/venv/bin/pip install -q schemathesis
fi

profile=${PROFILE:-release}
flag=$([ "$profile" = release ] && echo --release || true)
cargo build $flag --workspace --bins
bin="target/x86_64-unknown-linux-gnu/$profile"
"$bin/memvisor" image build
[ "${WITH_TEST_TOOLS:-0}" = 1 ] && "$bin/memvisor" image debian
echo "setup: ready: $bin/memvisor"
