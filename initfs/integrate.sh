#!/bin/sh
# Puts pcid-shutdown into a Redox initfs tree (the January 2026 layout the
# project targets: bin/, lib/drivers/, etc/init.rc, etc/pcid/initfs.toml).
#
#   integrate.sh [--with-nvmed] [--as-shutdown] INITFS_DIR BIN_DIR
#
# BIN_DIR holds this project's Redox binaries (pcid, shutdownd, nvmed).
#   bin/pcid           this project's pcid, in place of Redox's. hwd (or an
#                      init.rc line) starts it by that name, with no arguments;
#                      Redox's pcid-spawner, its match table and every other
#                      driver stay as they are.
#   bin/shutdownd      the two-phase shutdown; run it instead of `shutdown`.
#   bin/shutdown       only with --as-shutdown: shutdownd under coreutils'
#                      name (it takes `shutdown`'s flags, -r/--reboot), for
#                      images that call `shutdown` from the initfs.
#   lib/drivers/nvmed  only with --with-nvmed: this project's NVMe driver in
#                      place of Redox's, at the path the match table names
#                      (if etc/pcid/initfs.toml has no entry for it, the one
#                      in etc/pcid/initfs.toml beside this script is appended).
#                      It does not serve disk.* schemes, so leave it out on a
#                      system whose root file system is on NVMe.
# Nothing else is changed. Run it on the staged initfs directory before the
# initfs image is packed. Exit status 0 on success, 1 on a missing file, 2 on
# bad arguments.
set -eu

with_nvmed=0
as_shutdown=0
while [ $# -gt 0 ]; do
    case "$1" in
        --with-nvmed) with_nvmed=1; shift ;;
        --as-shutdown) as_shutdown=1; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) echo "integrate.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ $# -ne 2 ]; then
    echo "usage: integrate.sh [--with-nvmed] [--as-shutdown] INITFS_DIR BIN_DIR" >&2
    exit 2
fi
initfs=$1
bin=$2

fail() { echo "integrate.sh: $*" >&2; exit 1; }

[ -d "$initfs/bin" ] || fail "$initfs is not an initfs tree (no bin/ directory)"
need="pcid shutdownd"
[ "$with_nvmed" = 1 ] && need="$need nvmed"
for f in $need; do
    [ -f "$bin/$f" ] || fail "$bin/$f is missing"
done

here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/etc/pcid/initfs.toml
nvmed_command=/scheme/initfs/lib/drivers/nvmed
[ "$with_nvmed" = 0 ] || [ -f "$fragment" ] || fail "$fragment is missing"

install_file() { # SRC DEST
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.new"
    chmod 0755 "$2.new"
    mv "$2.new" "$2"
    echo "integrate.sh: $2"
}

if [ "$with_nvmed" = 0 ] && [ ! -f "$initfs/etc/pcid/initfs.toml" ]; then
    echo "integrate.sh: warning: $initfs/etc/pcid/initfs.toml is missing: pcid-spawner will start no drivers" >&2
fi
install_file "$bin/pcid" "$initfs/bin/pcid"
install_file "$bin/shutdownd" "$initfs/bin/shutdownd"
if [ "$as_shutdown" = 1 ]; then
    install_file "$bin/shutdownd" "$initfs/bin/shutdown"
fi
if [ "$with_nvmed" = 1 ]; then
    install_file "$bin/nvmed" "$initfs/lib/drivers/nvmed"
    table=$initfs/etc/pcid/initfs.toml
    if ! grep -qF "\"$nvmed_command\"" "$table" 2>/dev/null; then
        mkdir -p "$(dirname "$table")"
        { [ -s "$table" ] && echo; cat "$fragment"; } >>"$table"
        echo "integrate.sh: $table: appended the entry for $nvmed_command"
    fi
fi
