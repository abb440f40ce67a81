//! Bus backends: where pcid learns which PCI functions exist.
//!
//! * [`SimulatedBus`] reads a machine description ([`crate::machine`]);
//! * [`LinuxSysfsBus`] enumerates `/sys/bus/pci/devices` on Linux.

use std::path::{Path, PathBuf};

use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};

use crate::machine::{Machine, MachineError};

/// An error enumerating a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The machine description is invalid.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// A sysfs directory or attribute could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A sysfs attribute does not hold what the kernel writes there.
    #[error("{path}: unexpected content {content:?}: {expected}")]
    Attribute {
        /// The attribute file.
        path: PathBuf,
        /// What was read.
        content: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// A source of PCI functions.
pub trait Bus {
    /// Short name for logs (`sim`, `linux`).
    fn name(&self) -> &'static str;
    /// All functions on the bus, bridges included, parents before children
    /// where the backend knows the topology.
    fn enumerate(&self) -> Result<Vec<PciFunction>, BusError>;
    /// Environment the bus gives the driver of `address` besides pcid's
    /// own variables: where a simulated function's device model is
    /// ([`pcid_interface::PCID_SIM_MODEL`]). Real buses give nothing.
    fn driver_env(&self, address: PciAddress) -> Vec<(String, std::ffi::OsString)> {
        let _ = address;
        Vec::new()
    }
}

/// The simulated bus: the functions of a machine description.
#[derive(Debug, Clone)]
pub struct SimulatedBus {
    machine: Machine,
}

impl SimulatedBus {
    /// Load and check the machine description at `path`.
    pub fn from_file(path: &Path) -> Result<Self, BusError> {
        Ok(Self {
            machine: Machine::load(path)?,
        })
    }

    /// A bus over an already parsed machine.
    pub fn new(machine: Machine) -> Self {
        Self { machine }
    }
}

impl Bus for SimulatedBus {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn enumerate(&self) -> Result<Vec<PciFunction>, BusError> {
        Ok(self.machine.functions.clone())
    }

    fn driver_env(&self, address: PciAddress) -> Vec<(String, std::ffi::OsString)> {
        self.machine
            .models
            .get(&address)
            .map(|model| {
                (
                    pcid_interface::PCID_SIM_MODEL.to_string(),
                    std::path::absolute(model)
                        .unwrap_or_else(|_| model.clone())
                        .into_os_string(),
                )
            })
            .into_iter()
            .collect()
    }
}

/// Linux: the functions listed in `/sys/bus/pci/devices`.
///
/// Each entry is a symlink named by the function's address to the device's
/// directory under `/sys/devices`; pcid reads its `vendor`, `device`, `class`
/// (`0xCCSSII`) and `revision` attributes. The parent bridge is the path
/// component before the device in the canonical path, when that component is a
/// PCI address (`.../pci0000:00/0000:00:1c.0/0000:01:00.0` → `0000:00:1c.0`).
#[derive(Debug, Clone)]
pub struct LinuxSysfsBus {
    root: PathBuf,
}

/// Where Linux lists PCI functions.
pub const LINUX_SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";

impl LinuxSysfsBus {
    /// The bus at `/sys/bus/pci/devices`.
    pub fn new() -> Self {
        Self::with_root(PathBuf::from(LINUX_SYSFS_PCI_DEVICES))
    }

    /// The bus listed in `root` (a directory shaped like `/sys/bus/pci/devices`).
    pub fn with_root(root: PathBuf) -> Self {
        Self { root }
    }

    /// Read one function's attributes from its sysfs directory.
    pub fn read_function(&self, dir: &Path, address: PciAddress) -> Result<PciFunction, BusError> {
        let vendor = read_hex(&dir.join("vendor"), 0xffff, "a 16-bit hex id like 0x8086")?;
        let device = read_hex(&dir.join("device"), 0xffff, "a 16-bit hex id like 0x0010")?;
        let class = read_hex(
            &dir.join("class"),
            0xff_ffff,
            "a 24-bit hex class code like 0x010802",
        )?;
        let revision = match read_hex(&dir.join("revision"), 0xff, "an 8-bit hex revision") {
            Ok(r) => r,
            // Very old kernels have no revision attribute.
            Err(BusError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let canonical = std::fs::canonicalize(dir).map_err(|source| BusError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let parent = canonical
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<PciAddress>().ok());
        Ok(PciFunction {
            address,
            vendor: vendor as u16,
            device: device as u16,
            class: (class >> 16) as u8,
            subclass: (class >> 8) as u8,
            interface: class as u8,
            revision: revision as u8,
            parent,
            backend: FunctionBackend::LinuxSysfs {
                sysfs_path: dir.to_string_lossy().into_owned(),
            },
        })
    }
}

impl Default for LinuxSysfsBus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus for LinuxSysfsBus {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn enumerate(&self) -> Result<Vec<PciFunction>, BusError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BusError::Io { path, source }
        };
        let mut functions = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let name = entry.file_name();
            let Some(address) = name.to_str().and_then(|n| n.parse::<PciAddress>().ok()) else {
                log::debug!(
                    "{}: skipping {:?}: not a PCI address",
                    self.root.display(),
                    name
                );
                continue;
            };
            // One unreadable function must not hide the others.
            match self.read_function(&entry.path(), address) {
                Ok(f) => functions.push(f),
                Err(e) => log::error!("{address}: skipped: {e}"),
            }
        }
        // Bus numbers grow away from the root complex, so address order puts
        // bridges before the functions behind them.
        functions.sort_by_key(|f| f.address);
        Ok(functions)
    }
}

/// Read a sysfs attribute holding `0x`-prefixed hex no larger than `max`.
fn read_hex(path: &Path, max: u32, expected: &'static str) -> Result<u32, BusError> {
    let content = std::fs::read_to_string(path).map_err(|source| BusError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = || BusError::Attribute {
        path: path.to_path_buf(),
        content: content.clone(),
        expected,
    };
    let digits = content.trim().strip_prefix("0x").ok_or_else(bad)?;
    let v = u32::from_str_radix(digits, 16).map_err(|_| bad())?;
    if v > max {
        return Err(bad());
    }
    Ok(v)
}

/// One-line description of a function for logs: address, ids, class code.
pub fn describe(f: &PciFunction) -> String {
    format!(
        "{} [{:04x}:{:04x}] class {:02x}{:02x}{:02x}",
        f.address, f.vendor, f.device, f.class, f.subclass, f.interface
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Build a tree shaped like Linux sysfs:
    /// `devices/pci0000:00/<addr>[/<addr>]` plus `bus/pci/devices/<addr>` symlinks.
    struct FakeSysfs {
        dir: tempfile::TempDir,
    }

    impl FakeSysfs {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("bus/pci/devices")).unwrap();
            std::fs::create_dir_all(dir.path().join("devices/pci0000:00")).unwrap();
            Self { dir }
        }

        fn devices(&self) -> PathBuf {
            self.dir.path().join("bus/pci/devices")
        }

        /// Add a function at `chain` (root-complex-relative path of addresses).
        fn add(&self, chain: &[&str], vendor: &str, device: &str, class: &str, revision: &str) {
            let mut d = self.dir.path().join("devices/pci0000:00");
            for c in chain {
                d = d.join(c);
            }
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
            std::fs::write(d.join("device"), format!("{device}\n")).unwrap();
            std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
            std::fs::write(d.join("revision"), format!("{revision}\n")).unwrap();
            let rel: PathBuf = std::iter::once("../../../devices/pci0000:00".to_string())
                .chain(chain.iter().map(|c| c.to_string()))
                .collect();
            symlink(rel, self.devices().join(chain.last().unwrap())).unwrap();
        }
    }

    #[test]
    fn enumerates_functions_and_parent_bridges() {
        let fs = FakeSysfs::new();
        fs.add(&["0000:00:00.0"], "0x8086", "0x29c0", "0x060000", "0x00");
        fs.add(&["0000:00:1c.0"], "0x1b36", "0x000c", "0x060400", "0x00");
        fs.add(
            &["0000:00:1c.0", "0000:01:00.0"],
            "0x1b36",
            "0x0010",
            "0x010802",
            "0x02",
        );
        fs.add(&["0000:00:04.0"], "0x1b36", "0x0010", "0x010802", "0x02");
        // Something that is not a function.
        std::fs::write(fs.devices().join("README"), "x").unwrap();

        let functions = LinuxSysfsBus::with_root(fs.devices()).enumerate().unwrap();
        let addrs: Vec<String> = functions.iter().map(|f| f.address.to_string()).collect();
        assert_eq!(
            addrs,
            [
                "0000:00:00.0",
                "0000:00:04.0",
                "0000:00:1c.0",
                "0000:01:00.0"
            ]
        );
        let behind = &functions[3];
        assert_eq!((behind.vendor, behind.device), (0x1b36, 0x0010));
        assert_eq!((behind.class, behind.subclass, behind.interface), (1, 8, 2));
        assert_eq!(behind.revision, 2);
        assert_eq!(behind.parent, Some("0000:00:1c.0".parse().unwrap()));
        assert_eq!(
            behind.backend,
            FunctionBackend::LinuxSysfs {
                sysfs_path: fs
                    .devices()
                    .join("0000:01:00.0")
                    .to_string_lossy()
                    .into_owned()
            }
        );
        // Directly on the root bus: the parent component is `pci0000:00`.
        assert_eq!(functions[1].parent, None);
        let bridge = &functions[2];
        assert_eq!((bridge.class, bridge.subclass), (6, 4));
    }

    #[test]
    fn bad_attributes_are_typed_errors_and_skip_only_that_function() {
        let fs = FakeSysfs::new();
        fs.add(&["0000:00:04.0"], "0x1b36", "zzz", "0x010802", "0x02");
        fs.add(&["0000:00:05.0"], "0x1b36", "0x0010", "0x1010802", "0x02");
        fs.add(&["0000:00:06.0"], "0x1b36", "0x0010", "0x010802", "0x02");
        let bus = LinuxSysfsBus::with_root(fs.devices());
        let found = bus.enumerate().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].address.to_string(), "0000:00:06.0");

        let dir = fs.devices().join("0000:00:04.0");
        let e = bus
            .read_function(&dir, "0000:00:04.0".parse().unwrap())
            .unwrap_err();
        assert!(matches!(e, BusError::Attribute { .. }), "{e}");
        assert!(e.to_string().contains("0000:00:04.0/device"), "{e}");
        let dir = fs.devices().join("0000:00:05.0");
        let e = bus
            .read_function(&dir, "0000:00:05.0".parse().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("0000:00:05.0/class"), "{e}");

        let e = LinuxSysfsBus::with_root(PathBuf::from("/nonexistent/sysfs"))
            .enumerate()
            .unwrap_err();
        assert!(matches!(e, BusError::Io { .. }));
    }

    #[test]
    fn missing_revision_defaults_to_zero() {
        let fs = FakeSysfs::new();
        fs.add(&["0000:00:04.0"], "0x1b36", "0x0010", "0x010802", "0x02");
        std::fs::remove_file(
            fs.dir
                .path()
                .join("devices/pci0000:00/0000:00:04.0/revision"),
        )
        .unwrap();
        let f = LinuxSysfsBus::with_root(fs.devices()).enumerate().unwrap();
        assert_eq!(f[0].revision, 0);
    }

    #[test]
    fn simulated_bus_lists_machine_functions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(
            &p,
            "[[function]]\naddress = \"0000:00:04.0\"\nvendor = 1\ndevice = 2\nclass = 1\nsubclass = 8\ninterface = 2\n",
        )
        .unwrap();
        let bus = SimulatedBus::from_file(&p).unwrap();
        assert_eq!(bus.enumerate().unwrap().len(), 1);
        // No `model`: the driver is told nothing more; a real bus neither.
        let address: PciAddress = "0000:00:04.0".parse().unwrap();
        assert!(bus.driver_env(address).is_empty());
        assert!(LinuxSysfsBus::new().driver_env(address).is_empty());
        std::fs::write(&p, "[[function]]\naddress = 1\n").unwrap();
        let e = SimulatedBus::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("m.toml:2:"), "{e}");
    }

    #[test]
    fn simulated_bus_hands_the_model_path_to_the_driver() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(
            &p,
            "[[function]]\naddress = \"0000:00:04.0\"\nvendor = 1\ndevice = 2\nclass = 1\nsubclass = 8\ninterface = 2\nmodel = \"models/a.toml\"\n\n\
             [[function]]\naddress = \"0000:00:05.0\"\nvendor = 1\ndevice = 2\nclass = 1\nsubclass = 8\ninterface = 2\n",
        )
        .unwrap();
        let bus = SimulatedBus::from_file(&p).unwrap();
        let env = bus.driver_env("0000:00:04.0".parse().unwrap());
        assert_eq!(
            env,
            vec![(
                pcid_interface::PCID_SIM_MODEL.to_string(),
                dir.path().join("models/a.toml").into_os_string()
            )]
        );
        assert!(bus.driver_env("0000:00:05.0".parse().unwrap()).is_empty());
    }
}
