#!/usr/bin/env bash
# Installs what the test command needs on a fresh Debian bookworm machine.
#
# Run as root. Idempotent: when everything is already present it changes
# nothing and returns in well under a second.
#
#   tests/setup.sh           what the Linux tests and the QEMU guest need
#   tests/setup.sh --svg     only rsvg-convert (librsvg2-bin), which the
#                            render tests of shutdownd's SVG timeline run
#   tests/setup.sh --redox   that, plus the host tools the Redox image build
#                            uses (redox-e2e): nasm, clang, lld, llvm, binutils,
#                            make, patch, curl. The Rust toolchains it pins are
#                            installed by redox-e2e itself through rustup.
#
# What it installs:
#   * rsvg-convert (Debian's librsvg2-bin), the SVG renderer the picture
#     tests use.
#   * qemu-system-x86 from bookworm-backports. Machines of this kind carry
#     qemu-utils from backports, which conflicts with bookworm's own
#     qemu-system-x86, so the backports suite is added to apt's sources and
#     QEMU is taken from there (without recommended extras).
#   * the Rust target x86_64-unknown-linux-gnu (the guest binaries are linked
#     statically against glibc for it with -C target-feature=+crt-static).
#
# The guest kernel (Debian's linux-image-cloud-amd64) is not installed: the
# qemu-e2e runner downloads the package with `apt-get download` and unpacks it
# into .cache/qemu-e2e/ on first use.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

redox=0
svg_only=0
case "${1:-}" in
    "") ;;
    --redox) redox=1 ;;
    --svg) svg_only=1 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument $1 (use --redox, --svg or nothing)"; exit 2 ;;
esac

need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "must run as root to install $1"
        exit 1
    fi
}

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
}

# --- rsvg-convert (renders the SVG timeline in the tests) -------------------
if ! command -v rsvg-convert >/dev/null 2>&1; then
    need_root "librsvg2-bin"
    apt_update
    log "installing librsvg2-bin (rsvg-convert)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        librsvg2-bin >/dev/null
fi
if [ "$svg_only" = 1 ]; then
    log "ok: $(rsvg-convert --version)"
    exit 0
fi

# --- QEMU (x86_64 system emulator) -----------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    need_root "qemu-system-x86"
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = bookworm ]; then
        if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            log "adding bookworm-backports to apt sources"
            cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
            apt_updated=0
        fi
        apt_update
        log "installing qemu-system-x86 from bookworm-backports"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -t bookworm-backports qemu-system-x86 >/dev/null
    else
        apt_update
        log "installing qemu-system-x86"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            qemu-system-x86 >/dev/null
    fi
fi

# --- tools the runner uses to fetch the guest kernel -----------------------
for tool in dpkg-deb:dpkg apt-get:apt; do
    cmd=${tool%%:*}
    pkg=${tool##*:}
    if ! command -v "$cmd" >/dev/null 2>&1; then
        need_root "$pkg"
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    fi
done

# --- Rust target for the static guest binaries -----------------------------
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-gnu; then
        log "rustup target add x86_64-unknown-linux-gnu"
        rustup target add x86_64-unknown-linux-gnu
    fi
fi

# Static glibc (libc.a) comes with libc6-dev, which gcc already needs.
if [ ! -e /usr/lib/x86_64-linux-gnu/libc.a ]; then
    need_root "libc6-dev"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libc6-dev >/dev/null
fi

# --- host tools of the Redox image build (redox-e2e) -----------------------
if [ "$redox" = 1 ]; then
    # command:package pairs; Debian's clang/lld/llvm stand in for Redox's GCC
    # cross toolchain, nasm assembles the BIOS bootloader's real-mode stages.
    missing=""
    for pair in nasm:nasm clang:clang ld.lld:lld llvm-ar:llvm llvm-objcopy:llvm \
                ld:binutils objcopy:binutils make:make patch:patch curl:curl; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair##*:}"
    done
    if [ -n "$missing" ]; then
        need_root "$missing"
        apt_update
        log "installing$missing"
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
fi

log "ok: $(qemu-system-x86_64 --version | head -n1)"
