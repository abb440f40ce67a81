//! Writing simulated machine descriptions (pcid's TOML format, see
//! `pcid/src/machine.rs`) for `simulate`, the process-level tests and the
//! benchmark.
//!
//! Controllers sit behind PCIe root ports, 32 per port: root port `k` is
//! `0000:00:{10+k}.0` (ports 16 to 31 at `0000:00:{k-16}.0`) and its
//! controllers are `0000:{k+1}:DD.0`. The ids of the
//! example drivers are [`EXAMPLE_VENDOR`] with [`LEGACYD_DEVICE`],
//! [`PLAIND_DEVICE`], [`SILENT_DEVICE`]; they must agree with the match table
//! `initfs/lib/pcid.d/`.

use std::fmt::Write as _;
use std::path::PathBuf;

/// QEMU's NVMe controller ids (vendor 0x1b36 Red Hat, device 0x0010).
pub const NVME_VENDOR: u16 = 0x1b36;
/// See [`NVME_VENDOR`].
pub const NVME_DEVICE: u16 = 0x0010;
/// Vendor id of the example drivers' simulated functions.
pub const EXAMPLE_VENDOR: u16 = 0x1af4;
/// Device id served by `legacyd` (one-phase shutdown).
pub const LEGACYD_DEVICE: u16 = 0x10f0;
/// Device id served by `plaind` (declares no shutdown support).
pub const PLAIND_DEVICE: u16 = 0x10f1;
/// Device id served by `plaind` in silent mode (never speaks the protocol).
pub const SILENT_DEVICE: u16 = 0x10f2;
/// Device id served by `faultyd` (a two-phase driver that misbehaves on request).
pub const FAULTYD_DEVICE: u16 = 0x10f3;

/// A simulated NVMe controller (the `[function.sim]` keys of `nvme_sim::SimConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct NvmeSpec {
    /// Time a normal shutdown takes.
    pub shutdown_latency_ms: u64,
    /// RTD3E reported by Identify, µs (the budget nvmed announces).
    pub rtd3e_us: u64,
    /// Volatile write cache present.
    pub volatile_write_cache: bool,
    /// Backing file; in-memory namespace if `None`.
    pub backing_file: Option<PathBuf>,
    /// Namespace size in 512-byte blocks.
    pub namespace_blocks: u64,
    /// Fault names (`nvme_sim::Fault`), e.g. `shutdown-never-completes`.
    pub faults: Vec<String>,
}

impl NvmeSpec {
    /// A controller whose shutdown takes `latency_ms`, with RTD3E matching it
    /// (RTD3E 0 would mean "not reported", so a zero latency reports 1 µs).
    pub fn with_latency(latency_ms: u64) -> Self {
        Self {
            shutdown_latency_ms: latency_ms,
            rtd3e_us: (latency_ms * 1000).max(1),
            volatile_write_cache: true,
            backing_file: None,
            namespace_blocks: 2048,
            faults: Vec::new(),
        }
    }
}

/// One function of a simulated machine.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSpec {
    /// An NVMe controller, driven by `nvmed`.
    Nvme(NvmeSpec),
    /// A device driven by `legacyd`, whose one-phase shutdown takes `shutdown_ms`.
    Legacy {
        /// Time its shutdown takes.
        shutdown_ms: u64,
    },
    /// A device driven by `plaind`, which declares no shutdown support.
    Plain,
    /// A device driven by `plaind` in silent mode: it never says Hello.
    Silent,
    /// A device driven by `faultyd`: two-phase, shutdown taking `latency_ms`,
    /// misbehaving as `misbehave` says (`ignores-begin`, `ignores-finish`,
    /// `exits-in-begin`, `exits-in-finish`, `sends-garbage`, ...: the
    /// `driver-` fault kinds of [`super::fault::KINDS`] without that prefix)
    /// or not at all.
    Faulty {
        /// Time its shutdown takes (also its announced budget).
        latency_ms: u64,
        /// The misbehaviour, if any.
        misbehave: Option<String>,
    },
}

/// A machine: devices in order; see the module documentation for addresses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MachineSpec {
    /// Free-form name written into the file.
    pub name: String,
    /// The devices (the index is the device's position, used by `--fault`).
    pub devices: Vec<DeviceSpec>,
    /// When set, the root ports carry `faultyd`'s ids so that a driver serves
    /// them (two-phase, shutdown taking this many ms): shutdownd then has a
    /// listed parent for every device and must finish the children first.
    pub driven_root_ports_ms: Option<u64>,
}

/// Address of the device at position `index`.
pub fn device_address(index: usize) -> String {
    format!("0000:{:02x}:{:02x}.0", index / 32 + 1, index % 32)
}

/// Address of root port `port`: device 0x10 + `port` on bus 0, the ports
/// past the sixteenth wrapping round to devices 0x00–0x0f (a PCI device
/// number has five bits), so that all 32 ports of a 1024-device machine
/// have valid addresses.
pub fn root_port_address(port: usize) -> String {
    format!("0000:00:{:02x}.0", (0x10 + port) % 32)
}

impl MachineSpec {
    /// `n` NVMe controllers, each taking `latency_ms` to shut down, RTD3E
    /// matching, volatile write cache on, backing files `nvme-NN.img` in
    /// `backing_dir` (in-memory when `None`).
    pub fn nvme(n: usize, latency_ms: u64, backing_dir: Option<&std::path::Path>) -> Self {
        let devices = (0..n)
            .map(|i| {
                let mut spec = NvmeSpec::with_latency(latency_ms);
                spec.backing_file = backing_dir.map(|d| d.join(format!("nvme-{i:02}.img")));
                DeviceSpec::Nvme(spec)
            })
            .collect();
        Self {
            name: format!("{n} simulated NVMe controllers, {latency_ms} ms shutdown each"),
            devices,
            driven_root_ports_ms: None,
        }
    }

    /// Maximum number of devices a machine can describe (32 per root port, 32 ports).
    pub const MAX_DEVICES: usize = 32 * 32;

    /// The machine description as TOML text.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Simulated machine written by shutdown_tests.");
        let _ = writeln!(s, "name = {}", toml_str(&self.name));
        let ports = self.devices.len().div_ceil(32);
        for p in 0..ports {
            let (vendor, device) = match self.driven_root_ports_ms {
                Some(_) => (EXAMPLE_VENDOR, FAULTYD_DEVICE),
                None => (0x8086, 0x7450),
            };
            let _ = writeln!(
                s,
                "\n[[function]]  # PCIe root port {p}\naddress = \"{}\"\nvendor = {vendor:#06x}\ndevice = {device:#06x}\nclass = 0x06\nsubclass = 0x04\ninterface = 0x00",
                root_port_address(p)
            );
            if let Some(ms) = self.driven_root_ports_ms {
                let _ = writeln!(s, "[function.sim]\nlatency_ms = {ms}");
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            let (vendor, device, class, subclass, interface) = match d {
                DeviceSpec::Nvme(_) => (NVME_VENDOR, NVME_DEVICE, 0x01, 0x08, 0x02),
                DeviceSpec::Legacy { .. } => (EXAMPLE_VENDOR, LEGACYD_DEVICE, 0xff, 0x00, 0x00),
                DeviceSpec::Plain => (EXAMPLE_VENDOR, PLAIND_DEVICE, 0xff, 0x00, 0x00),
                DeviceSpec::Silent => (EXAMPLE_VENDOR, SILENT_DEVICE, 0xff, 0x00, 0x00),
                DeviceSpec::Faulty { .. } => (EXAMPLE_VENDOR, FAULTYD_DEVICE, 0xff, 0x00, 0x00),
            };
            let _ = writeln!(
                s,
                "\n[[function]]  # device {i}\naddress = \"{}\"\nvendor = {vendor:#06x}\ndevice = {device:#06x}\nclass = {class:#04x}\nsubclass = {subclass:#04x}\ninterface = {interface:#04x}\nparent = \"{}\"",
                device_address(i),
                root_port_address(i / 32)
            );
            match d {
                DeviceSpec::Nvme(n) => {
                    let _ = writeln!(s, "[function.sim]");
                    let _ = writeln!(s, "serial = \"SIM{i:04}\"");
                    let _ = writeln!(s, "rtd3e_us = {}", n.rtd3e_us);
                    let _ = writeln!(s, "shutdown_latency_ms = {}", n.shutdown_latency_ms);
                    let _ = writeln!(s, "volatile_write_cache = {}", n.volatile_write_cache);
                    let _ = writeln!(s, "namespace_blocks = {}", n.namespace_blocks);
                    if let Some(f) = &n.backing_file {
                        let _ = writeln!(s, "backing_file = {}", toml_str(&f.to_string_lossy()));
                    }
                    if !n.faults.is_empty() {
                        let names: Vec<String> = n.faults.iter().map(|f| toml_str(f)).collect();
                        let _ = writeln!(s, "faults = [{}]", names.join(", "));
                    }
                }
                DeviceSpec::Legacy { shutdown_ms } => {
                    let _ = writeln!(s, "[function.sim]\nshutdown_ms = {shutdown_ms}");
                }
                DeviceSpec::Plain => {}
                DeviceSpec::Silent => {}
                DeviceSpec::Faulty {
                    latency_ms,
                    misbehave,
                } => {
                    let _ = writeln!(s, "[function.sim]\nlatency_ms = {latency_ms}");
                    if let Some(m) = misbehave {
                        let _ = writeln!(s, "misbehave = {}", toml_str(m));
                    }
                }
            }
        }
        s
    }
}

/// A TOML basic string with escapes.
fn toml_str(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_machine_is_one_pcid_accepts() {
        let m = MachineSpec::nvme(MachineSpec::MAX_DEVICES, 0, None);
        let parsed = pcid::machine::Machine::parse(std::path::Path::new("m.toml"), &m.to_toml())
            .unwrap_or_else(|e| panic!("{e}"));
        // 1024 controllers and their 32 root ports, every address distinct.
        assert_eq!(parsed.functions.len(), 1024 + 32);
        let mut addresses: Vec<_> = parsed.functions.iter().map(|f| f.address).collect();
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), 1024 + 32);
    }

    #[test]
    fn machine_toml_parses_and_has_expected_shape() {
        let mut m = MachineSpec::nvme(33, 4500, Some(std::path::Path::new("/tmp/x\"y")));
        m.devices.push(DeviceSpec::Legacy { shutdown_ms: 100 });
        m.devices.push(DeviceSpec::Plain);
        m.devices.push(DeviceSpec::Silent);
        let text = m.to_toml();
        let v: toml::Table = toml::from_str(&text).unwrap();
        let f = v["function"].as_array().unwrap();
        // 2 root ports + 36 devices.
        assert_eq!(f.len(), 38);
        assert_eq!(f[2]["address"].as_str(), Some("0000:01:00.0"));
        assert_eq!(f[2]["parent"].as_str(), Some("0000:00:10.0"));
        assert_eq!(f[2]["sim"]["rtd3e_us"].as_integer(), Some(4_500_000));
        assert_eq!(
            f[2]["sim"]["backing_file"].as_str(),
            Some("/tmp/x\"y/nvme-00.img")
        );
        assert_eq!(f[34]["address"].as_str(), Some("0000:02:00.0"));
        assert_eq!(f[34]["parent"].as_str(), Some("0000:00:11.0"));
        assert_eq!(f[35]["device"].as_integer(), Some(0x10f0));
        assert_eq!(f[35]["sim"]["shutdown_ms"].as_integer(), Some(100));
    }
}
