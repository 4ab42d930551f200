#!/usr/bin/env bash
# Set up a fresh Debian 12 machine to build and test observer. Idempotent: every step checks
# before it acts, so a second run takes seconds.
#
# What it does and why:
#   - Debian's rustc-web (1.96, LLVM 22) ships a prebuilt `core` for bpfel-unknown-none
#     (libstd-rust-web-dev-bpf), so the eBPF crate builds without -Z build-std and rust-src,
#     which rustup cannot fetch here.
#   - aya-build runs `rustup run <toolchain> cargo`, so that rustc is linked into rustup as the
#     toolchain `observer-bpf`.
#   - bpf-linker 0.13.0 is built against the same LLVM major as that rustc.
#   - cargo-deb 3.8.0 builds the .deb (cargo xtask package); dpkg and man-db install and
#     read it in the packaging test.
#   - The test peers (dnsmasq, nginx, nft, dig, curl, openssl, iperf3, tmux, bpftool, tcpdump,
#     ethtool) come from Debian, and so do qemu and busybox for booting older kernels
#     (cargo xtask test-kernels).
set -euo pipefail

TOOLCHAIN_NAME=${OBSERVER_BPF_TOOLCHAIN:-observer-bpf}
TOOLCHAIN_DIR=${OBSERVER_BPF_TOOLCHAIN_DIR:-/opt/observer-bpf-toolchain}
BPF_LINKER_VERSION=0.13.0
CARGO_DEB_VERSION=3.8.0

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
command -v rustup >/dev/null || { log "rustup is missing: this script expects a machine with rustup stable"; exit 1; }

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s ' "$p"
  done
}

apt_updated=
apt_install() {
  local missing
  missing=$(missing_packages "$@")
  [ -z "$missing" ] && return 0
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  log "installing: $missing"
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# 1. Debian's rustc with the BPF core library, then the LLVM that matches it.
apt_install rustc-web cargo-web libstd-rust-web-dev-bpf
llvm_major=$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm_major" ] || { log "cannot read the LLVM version from /usr/bin/rustc -vV"; exit 1; }
apt_install "llvm-${llvm_major}-dev" libzstd-dev zlib1g-dev

# 2. Test peers and tools used by the end-to-end tests.
apt_install iproute2 nftables dnsmasq-base nginx-light dnsutils curl openssl iperf3 tmux bpftool util-linux procps tcpdump ethtool python3

# 2b. Booting Debian 12's stock kernel under qemu (TCG) with a busybox initramfs.
apt_install qemu-system-x86 busybox-static cpio

# 3. Link Debian's rustc into rustup for aya-build.
$SUDO mkdir -p "$TOOLCHAIN_DIR/bin"
$SUDO ln -sfn /usr/bin/rustc "$TOOLCHAIN_DIR/bin/rustc"
$SUDO ln -sfn /usr/bin/cargo "$TOOLCHAIN_DIR/bin/cargo"
$SUDO ln -sfn /usr/lib "$TOOLCHAIN_DIR/lib"
if ! rustup toolchain list | grep -q "^${TOOLCHAIN_NAME}\b"; then
  log "linking $TOOLCHAIN_DIR as rustup toolchain $TOOLCHAIN_NAME"
  rustup toolchain link "$TOOLCHAIN_NAME" "$TOOLCHAIN_DIR"
fi
rustup run "$TOOLCHAIN_NAME" rustc --print target-list | grep -qx bpfel-unknown-none \
  || { log "toolchain $TOOLCHAIN_NAME cannot target bpfel-unknown-none"; exit 1; }

# 4. bpf-linker against that LLVM.
if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM $llvm_major (about a minute)"
  LLVM_PREFIX="/usr/lib/llvm-${llvm_major}" cargo install bpf-linker --version "$BPF_LINKER_VERSION" \
    --locked --no-default-features --features "llvm-${llvm_major}" --quiet
fi

# 5. cargo-deb, for `cargo xtask package` and the packaging test.
apt_install dpkg-dev man-db
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  log "building cargo-deb $CARGO_DEB_VERSION (about two minutes)"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

log "ready: rustc $(/usr/bin/rustc -V | cut -d' ' -f2) (LLVM $llvm_major), $(bpf-linker --version)"
