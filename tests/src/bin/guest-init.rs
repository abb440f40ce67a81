//! `/init` of the QEMU end-to-end guest; see `shutdown_tests::qemu::guest`.

fn main() {
    shutdown_tests::qemu::guest::main()
}
