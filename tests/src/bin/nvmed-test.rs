//! `nvmed-test`: the NVMe driver with the simulated controller and the data
//! checks of the tests (see `shutdown_tests::nvme`). Never shipped.

fn main() -> std::process::ExitCode {
    if let Some(code) = shutdown_tests::cli::driver_without_options(
        "nvmed-test",
        "The NVMe driver with the simulated controller, the self-test (NVMED_SELFTEST=1)\nand the workload (NVMED_WORKLOAD=DIR) of the tests, started by pcid. Never shipped.",
    ) {
        return code;
    }
    shutdown_tests::nvme::driver::main()
}
