//! Writing simulated machine descriptions (pcid's TOML format, see
//! `pcid/src/machine.rs`) and their device models ([`super::models`]) for
//! `simulate`, the process-level tests and the benchmark. Both are typed
//! values written with `toml`.
//!
//! Controllers sit behind PCIe root ports, 32 per port: root port `k` is
//! `0000:00:{10+k}.0` (ports 16 to 31 at `0000:00:{k-16}.0`) and its
//! controllers are `0000:{k+1}:DD.0`. The ids of the
//! example drivers are [`EXAMPLE_VENDOR`] with [`LEGACYD_DEVICE`],
//! [`PLAIND_DEVICE`], [`SILENT_DEVICE`]; they must agree with the match table
//! `initfs/lib/pcid.d/`.

use std::path::{Path, PathBuf};

use nvme_sim::SimConfig;
use serde::Serialize;

use super::models::{write_model, FaultyModel, LegacyModel, Misbehave, ModelError};

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

/// A simulated NVMe controller whose shutdown takes `latency_ms`, with
/// RTD3E matching it (RTD3E 0 would mean "not reported", so a zero latency
/// reports 1 µs), a volatile write cache and 2048 blocks in memory.
pub fn nvme_with_latency(latency_ms: u64) -> SimConfig {
    SimConfig {
        shutdown_latency_ms: latency_ms,
        rtd3e_us: u32::try_from(latency_ms.saturating_mul(1000).max(1)).unwrap_or(u32::MAX),
        volatile_write_cache: true,
        namespace_blocks: 2048,
        ..SimConfig::default()
    }
}

/// One function of a simulated machine.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSpec {
    /// An NVMe controller, driven by `nvmed` (its serial is `SIM<index>`
    /// when left at the default).
    Nvme(SimConfig),
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
    /// misbehaving as `misbehave` says (the `driver-` fault kinds of
    /// [`super::fault::KINDS`] without that prefix) or not at all.
    Faulty {
        /// Time its shutdown takes (also its announced budget).
        latency_ms: u64,
        /// The misbehaviour, if any.
        misbehave: Option<Misbehave>,
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
    pub fn nvme(n: usize, latency_ms: u64, backing_dir: Option<&Path>) -> Self {
        let devices = (0..n)
            .map(|i| {
                let mut spec = nvme_with_latency(latency_ms);
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

    /// Writes the machine description to `path` and each device's model
    /// into the directory `<path>.models` beside it (named from the machine
    /// file by relative paths, so the pair can be moved together).
    pub fn write(&self, path: &Path) -> Result<(), ModelError> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "machine".into());
        let models_rel = PathBuf::from(format!("{file_name}.models"));
        let models_dir = path.with_file_name(&models_rel);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModelError::Io { path, source }
        };
        std::fs::create_dir_all(&models_dir).map_err(io(&models_dir))?;
        let model = |name: String, write: &dyn Fn(&Path) -> Result<(), ModelError>| {
            write(&models_dir.join(&name))?;
            Ok::<_, ModelError>(Some(models_rel.join(name)))
        };

        let mut functions = Vec::with_capacity(self.devices.len() + 32);
        for p in 0..self.devices.len().div_ceil(32) {
            let (vendor, device, model) = match self.driven_root_ports_ms {
                Some(ms) => (
                    EXAMPLE_VENDOR,
                    FAULTYD_DEVICE,
                    model(format!("port-{p:02}.toml"), &|f| {
                        write_model(
                            f,
                            &FaultyModel {
                                latency_ms: ms,
                                misbehave: None,
                            },
                        )
                    })?,
                ),
                None => (0x8086, 0x7450, None),
            };
            functions.push(FunctionEntry {
                address: root_port_address(p),
                vendor,
                device,
                class: 0x06,
                subclass: 0x04,
                interface: 0x00,
                parent: None,
                model,
            });
        }
        for (i, d) in self.devices.iter().enumerate() {
            let name = format!("device-{i:04}.toml");
            let (vendor, device, class, model) = match d {
                DeviceSpec::Nvme(config) => {
                    let mut config = config.clone();
                    if config.serial == SimConfig::default().serial {
                        config.serial = format!("SIM{i:04}");
                    }
                    let m = model(name, &|f| write_model(f, &config))?;
                    (NVME_VENDOR, NVME_DEVICE, (0x01, 0x08, 0x02), m)
                }
                DeviceSpec::Legacy { shutdown_ms } => {
                    let legacy = LegacyModel {
                        shutdown_ms: *shutdown_ms,
                    };
                    let m = model(name, &|f| write_model(f, &legacy))?;
                    (EXAMPLE_VENDOR, LEGACYD_DEVICE, (0xff, 0x00, 0x00), m)
                }
                DeviceSpec::Plain => (EXAMPLE_VENDOR, PLAIND_DEVICE, (0xff, 0x00, 0x00), None),
                DeviceSpec::Silent => (EXAMPLE_VENDOR, SILENT_DEVICE, (0xff, 0x00, 0x00), None),
                DeviceSpec::Faulty {
                    latency_ms,
                    misbehave,
                } => {
                    let faulty = FaultyModel {
                        latency_ms: *latency_ms,
                        misbehave: *misbehave,
                    };
                    let m = model(name, &|f| write_model(f, &faulty))?;
                    (EXAMPLE_VENDOR, FAULTYD_DEVICE, (0xff, 0x00, 0x00), m)
                }
            };
            functions.push(FunctionEntry {
                address: device_address(i),
                vendor,
                device,
                class: class.0,
                subclass: class.1,
                interface: class.2,
                parent: Some(root_port_address(i / 32)),
                model,
            });
        }
        write_model(
            path,
            &MachineFile {
                name: self.name.clone(),
                function: functions,
            },
        )
    }
}

/// pcid's machine description file (`pcid/src/machine.rs` reads it; the
/// tests below check that it accepts what this writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineFile {
    /// Free-form name.
    pub name: String,
    /// The functions, parents first.
    pub function: Vec<FunctionEntry>,
}

/// One `[[function]]` of a [`MachineFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionEntry {
    /// PCI address, `SSSS:BB:DD.F`.
    pub address: String,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code.
    pub class: u8,
    /// Subclass.
    pub subclass: u8,
    /// Programming interface.
    pub interface: u8,
    /// The bridge it sits behind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Its device model file, relative to the machine file's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_machine_is_one_pcid_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        MachineSpec::nvme(MachineSpec::MAX_DEVICES, 0, None)
            .write(&path)
            .unwrap();
        let parsed = pcid::machine::Machine::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // 1024 controllers and their 32 root ports, every address distinct.
        assert_eq!(parsed.functions.len(), 1024 + 32);
        let mut addresses: Vec<_> = parsed.functions.iter().map(|f| f.address).collect();
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), 1024 + 32);
        assert_eq!(parsed.models.len(), 1024);
    }

    #[test]
    fn machine_and_models_read_back_as_pcid_and_the_drivers_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine.toml");
        let mut m = MachineSpec::nvme(33, 4500, Some(Path::new("/tmp/x\"y")));
        if let DeviceSpec::Nvme(n) = &mut m.devices[1] {
            n.faults = vec![nvme_sim::Fault::FatalStatus];
        }
        m.devices.push(DeviceSpec::Legacy { shutdown_ms: 100 });
        m.devices.push(DeviceSpec::Plain);
        m.devices.push(DeviceSpec::Faulty {
            latency_ms: 30,
            misbehave: Some(Misbehave::IgnoresFinish),
        });
        m.driven_root_ports_ms = Some(20);
        m.write(&path).unwrap();
        let parsed = pcid::machine::Machine::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // 2 root ports + 36 devices.
        assert_eq!(parsed.functions.len(), 38);
        let f = &parsed.functions;
        assert_eq!(f[2].address.to_string(), "0000:01:00.0");
        assert_eq!(
            f[2].parent.map(|a| a.to_string()).as_deref(),
            Some("0000:00:10.0")
        );
        assert_eq!(f[34].address.to_string(), "0000:02:00.0");
        assert_eq!(f[35].device, LEGACYD_DEVICE);
        let model_of = |i: usize| {
            let p = &parsed.models[&f[i].address];
            (p.clone(), std::fs::read_to_string(p).unwrap())
        };
        // Each model reads back as the value written (the serial numbered by index).
        let (_, text) = model_of(3);
        let nvme = SimConfig::from_toml_str(&text).unwrap();
        let mut want = nvme_with_latency(4500);
        want.serial = "SIM0001".into();
        want.backing_file = Some(PathBuf::from("/tmp/x\"y/nvme-01.img"));
        want.faults = vec![nvme_sim::Fault::FatalStatus];
        assert_eq!(nvme, want);
        let (p, text) = model_of(35);
        assert_eq!(
            super::super::models::parse_model::<LegacyModel>(&p, &text).unwrap(),
            LegacyModel { shutdown_ms: 100 }
        );
        let (p, text) = model_of(37);
        assert_eq!(
            super::super::models::parse_model::<FaultyModel>(&p, &text).unwrap(),
            FaultyModel {
                latency_ms: 30,
                misbehave: Some(Misbehave::IgnoresFinish)
            }
        );
        let (p, text) = model_of(0);
        assert_eq!(
            super::super::models::parse_model::<FaultyModel>(&p, &text)
                .unwrap()
                .latency_ms,
            20
        );
        // plaind's device has no model.
        assert!(!parsed.models.contains_key(&f[36].address));
    }
}
