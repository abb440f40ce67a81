//! `nvmed-test`: the NVMe driver with the simulated controller and the data
//! checks of the tests (see `shutdown_tests::nvme`). Never shipped.

fn main() -> std::process::ExitCode {
    shutdown_tests::nvme::driver::main()
}
