//! Driver match tables in Redox's `pcid.d` format.
//!
//! A table directory holds `*.toml` files (read in file-name order), each with
//! `[[drivers]]` entries:
//!
//! ```toml
//! [[drivers]]
//! name = "NVMe storage"
//! class = 1                  # optional: class code
//! subclass = 8               # optional: subclass
//! interface = 2              # optional: programming interface
//! vendor = 0x1b36            # optional: vendor id
//! device = 0x0010            # optional: device id
//! ids = { 0x1af4 = [0x10f0, 0x10f1] }   # optional: vendor (hex key) -> device ids
//! device_id_range = { start = 0x1000, end = 0x1040 }  # optional, end exclusive
//! command = ["nvmed"]        # program and arguments
//! ```
//!
//! Every key present in an entry must match the function; the first matching
//! entry (file order, then entry order) wins. As in Redox, an entry without
//! `command` matches nothing. `command[0]` is looked up in the driver
//! directories given to [`MatchTable::resolve_program`], then in `PATH`.
//! Unknown keys, bad values, `ids` keys that are not hexadecimal vendor ids
//! and empty commands are errors naming the file and line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use pcid_interface::function::PciFunction;

use crate::location::{one_line, Location};

/// An error loading a match table.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    /// A directory or file could not be read.
    #[error("{path}: cannot read match table: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not valid TOML or an entry has a bad key or value.
    #[error("{location}: {message}")]
    Invalid {
        /// Where.
        location: Location,
        /// What is wrong.
        message: String,
    },
}

/// A half-open range of device ids, `start <= id < end` (serde's `Range` shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceIdRange {
    /// First id in the range.
    pub start: u16,
    /// First id after the range.
    pub end: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    drivers: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Option<String>,
    class: Option<u8>,
    subclass: Option<u8>,
    interface: Option<u8>,
    vendor: Option<u16>,
    device: Option<u16>,
    ids: Option<BTreeMap<Spanned<String>, Vec<u16>>>,
    device_id_range: Option<DeviceIdRange>,
    command: Option<Spanned<Vec<String>>>,
}

/// One `[[drivers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverEntry {
    /// `name`, or the program name when absent.
    pub name: String,
    /// Required class code.
    pub class: Option<u8>,
    /// Required subclass.
    pub subclass: Option<u8>,
    /// Required programming interface.
    pub interface: Option<u8>,
    /// Required vendor id.
    pub vendor: Option<u16>,
    /// Required device id.
    pub device: Option<u16>,
    /// Accepted (vendor, device) pairs.
    pub ids: Option<BTreeMap<u16, Vec<u16>>>,
    /// Accepted device id range.
    pub device_id_range: Option<DeviceIdRange>,
    /// Program and arguments; `None` never matches.
    pub command: Option<Vec<String>>,
    /// Where the entry is defined.
    pub location: Location,
}

impl DriverEntry {
    /// Whether every key present in the entry matches `f`.
    pub fn matches(&self, f: &PciFunction) -> bool {
        self.command.is_some()
            && self.class.is_none_or(|c| c == f.class)
            && self.subclass.is_none_or(|s| s == f.subclass)
            && self.interface.is_none_or(|i| i == f.interface)
            && self.vendor.is_none_or(|v| v == f.vendor)
            && self.device.is_none_or(|d| d == f.device)
            && self.ids.as_ref().is_none_or(|ids| {
                ids.get(&f.vendor)
                    .is_some_and(|devices| devices.contains(&f.device))
            })
            && self
                .device_id_range
                .is_none_or(|r| r.start <= f.device && f.device < r.end)
    }

    /// The program name (`command[0]`), if the entry has a command.
    pub fn program(&self) -> Option<&str> {
        self.command
            .as_ref()
            .and_then(|c| c.first())
            .map(String::as_str)
    }
}

/// All entries of a table directory, in match order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchTable {
    /// Entries in file-name order, then file order.
    pub entries: Vec<DriverEntry>,
}

impl MatchTable {
    /// Load every `*.toml` file in `dir` (file-name order).
    pub fn load_dir(dir: &Path) -> Result<Self, MatchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MatchError::Io { path, source }
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut table = Self::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(io(&file))?;
            table.entries.extend(Self::parse(&file, &text)?.entries);
        }
        Ok(table)
    }

    /// Parse one table file; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, MatchError> {
        let file: TableFile = toml::from_str(text).map_err(|e| MatchError::Invalid {
            location: Location::at_span(path, text, e.span()),
            message: one_line(e.message()),
        })?;
        let mut entries = Vec::with_capacity(file.drivers.len());
        for raw in file.drivers {
            let location = Location::at_span(path, text, Some(raw.span()));
            let raw = raw.into_inner();
            let ids = match raw.ids {
                None => None,
                Some(map) => {
                    let mut ids = BTreeMap::new();
                    for (vendor, devices) in map {
                        let digits = vendor
                            .get_ref()
                            .strip_prefix("0x")
                            .unwrap_or(vendor.get_ref());
                        let v =
                            u16::from_str_radix(digits, 16).map_err(|_| MatchError::Invalid {
                                location: Location::at_span(path, text, Some(vendor.span())),
                                message: format!(
                                    "ids: key {:?} is not a hexadecimal vendor id (e.g. 0x8086)",
                                    vendor.get_ref()
                                ),
                            })?;
                        ids.entry(v).or_insert_with(Vec::new).extend(devices);
                    }
                    Some(ids)
                }
            };
            let command = match raw.command {
                None => None,
                Some(c) => {
                    if c.get_ref().first().is_none_or(|p| p.is_empty()) {
                        return Err(MatchError::Invalid {
                            location: Location::at_span(path, text, Some(c.span())),
                            message: "command: must name a program".to_string(),
                        });
                    }
                    Some(c.into_inner())
                }
            };
            if let Some(r) = raw.device_id_range {
                if r.start >= r.end {
                    return Err(MatchError::Invalid {
                        location,
                        message: format!(
                            "device_id_range: empty range {:#06x}..{:#06x} (end is exclusive)",
                            r.start, r.end
                        ),
                    });
                }
            }
            let name = raw.name.unwrap_or_else(|| {
                command
                    .as_ref()
                    .and_then(|c| c.first())
                    .cloned()
                    .unwrap_or_default()
            });
            entries.push(DriverEntry {
                name,
                class: raw.class,
                subclass: raw.subclass,
                interface: raw.interface,
                vendor: raw.vendor,
                device: raw.device,
                ids,
                device_id_range: raw.device_id_range,
                command,
                location,
            });
        }
        Ok(Self { entries })
    }

    /// The first entry matching `f`.
    pub fn find(&self, f: &PciFunction) -> Option<&DriverEntry> {
        self.entries.iter().find(|e| e.matches(f))
    }

    /// Resolve a program name: a name containing `/` is used as is; otherwise
    /// the first executable file named `program` in `driver_dirs`, then in
    /// `PATH`. Returns `None` when nothing is found.
    pub fn resolve_program(
        program: &str,
        driver_dirs: &[PathBuf],
        path_var: Option<OsString>,
    ) -> Option<PathBuf> {
        if program.contains('/') {
            let p = PathBuf::from(program);
            return is_executable(&p).then_some(p);
        }
        let from_path = path_var
            .as_ref()
            .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
            .unwrap_or_default();
        driver_dirs
            .iter()
            .chain(from_path.iter())
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcid_interface::function::FunctionBackend;

    fn function(vendor: u16, device: u16, class: u8, subclass: u8, interface: u8) -> PciFunction {
        PciFunction {
            address: "0000:00:04.0".parse().unwrap(),
            vendor,
            device,
            class,
            subclass,
            interface,
            revision: 0,
            parent: None,
            backend: FunctionBackend::Redox,
        }
    }

    fn parse(text: &str) -> Result<MatchTable, MatchError> {
        MatchTable::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn class_entry_matches_any_vendor() {
        let t =
            parse("[[drivers]]\nname = \"NVMe\"\nclass = 1\nsubclass = 8\ncommand = [\"nvmed\"]\n")
                .unwrap();
        let e = t.find(&function(0x1b36, 0x10, 1, 8, 2)).unwrap();
        assert_eq!(e.name, "NVMe");
        assert_eq!(e.program(), Some("nvmed"));
        assert_eq!(e.location.to_string(), "t.toml:1");
        assert!(t.find(&function(0x1b36, 0x10, 1, 6, 1)).is_none());
    }

    #[test]
    fn all_present_keys_must_match() {
        let t = parse(
            "[[drivers]]\nclass = 1\nvendor = 0x1af4\ndevice = 0x10f0\ninterface = 0\ncommand = [\"a\"]\n",
        )
        .unwrap();
        assert!(t.find(&function(0x1af4, 0x10f0, 1, 0, 0)).is_some());
        assert!(t.find(&function(0x1af4, 0x10f0, 2, 0, 0)).is_none());
        assert!(t.find(&function(0x1af4, 0x10f1, 1, 0, 0)).is_none());
        assert!(t.find(&function(0x1af5, 0x10f0, 1, 0, 0)).is_none());
        assert!(t.find(&function(0x1af4, 0x10f0, 1, 0, 1)).is_none());
        // Name defaults to the program.
        assert_eq!(t.entries[0].name, "a");
    }

    #[test]
    fn ids_map_and_range() {
        let t = parse(
            "[[drivers]]\nids = { 0x1af4 = [0x10f0, 0x10f1], \"8086\" = [0x100e] }\ncommand = [\"a\"]\n\
             [[drivers]]\nvendor = 0x1234\ndevice_id_range = { start = 0x10, end = 0x20 }\ncommand = [\"b\"]\n",
        )
        .unwrap();
        assert_eq!(
            t.find(&function(0x1af4, 0x10f1, 0, 0, 0)).unwrap().name,
            "a"
        );
        assert_eq!(
            t.find(&function(0x8086, 0x100e, 0, 0, 0)).unwrap().name,
            "a"
        );
        assert!(t.find(&function(0x8086, 0x10f1, 0, 0, 0)).is_none());
        assert_eq!(t.find(&function(0x1234, 0x10, 0, 0, 0)).unwrap().name, "b");
        assert_eq!(t.find(&function(0x1234, 0x1f, 0, 0, 0)).unwrap().name, "b");
        assert!(t.find(&function(0x1234, 0x20, 0, 0, 0)).is_none());
        assert!(t.find(&function(0x1234, 0x0f, 0, 0, 0)).is_none());
    }

    #[test]
    fn first_match_wins_and_commandless_entries_never_match() {
        let t = parse(
            "[[drivers]]\nclass = 1\n\n[[drivers]]\nclass = 1\ncommand = [\"x\", \"--flag\"]\n\n\
             [[drivers]]\nclass = 1\ncommand = [\"y\"]\n",
        )
        .unwrap();
        let e = t.find(&function(0, 0, 1, 0, 0)).unwrap();
        assert_eq!(
            e.command.as_deref(),
            Some(&["x".to_string(), "--flag".to_string()][..])
        );
        assert_eq!(e.location.line, 4);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse("[[drivers]]\nclass = 1\n\n[[drivers]]\nclas = 1\ncommand = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:5: unknown field `clas`"), "{e}");
        let e = parse("[[drivers]]\nclass = 300\ncommand = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:2:"), "{e}");
        let e = parse("[[drivers]]\nids = { xyz = [1] }\ncommand = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:2: ids: key \"xyz\""), "{e}");
        let e = parse("[[drivers]]\nclass = 1\ncommand = []\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.toml:3: command: must name a program");
        let e = parse("[[drivers]]\ndevice_id_range = { start = 5, end = 5 }\ncommand = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.toml:1: device_id_range: empty range"),
            "{e}"
        );
        let e = parse("[[drivers]\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1:"), "{e}");
    }

    #[test]
    fn load_dir_reads_toml_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "[[drivers]]\nclass = 1\ncommand = [\"b\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.toml"),
            "[[drivers]]\nclass = 1\ncommand = [\"a\"]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a table").unwrap();
        let t = MatchTable::load_dir(dir.path()).unwrap();
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.find(&function(0, 0, 1, 0, 0)).unwrap().name, "a");

        std::fs::write(dir.path().join("c.toml"), "[[drivers]]\nclass = \"one\"\n").unwrap();
        let e = MatchTable::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("c.toml:2:"), "{e}");
        let e = MatchTable::load_dir(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read match table"), "{e}");
    }

    /// The repository's initfs table (what Redox, the simulated machine and
    /// the QEMU guest all load) parses and matches what it documents.
    #[test]
    fn repository_initfs_table() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../initfs/lib/pcid.d");
        let t = MatchTable::load_dir(&dir).unwrap();
        let program = |v, d, c, s, i| t.find(&function(v, d, c, s, i)).and_then(|e| e.program());
        // QEMU's NVMe controller: class 01, subclass 08, interface 02.
        assert_eq!(program(0x1b36, 0x0010, 1, 8, 2), Some("nvmed"));
        assert_eq!(program(0x8086, 0xf1a8, 1, 8, 2), Some("nvmed"));
        assert_eq!(program(0x1af4, 0x10f0, 0xff, 0, 0), Some("legacyd"));
        assert_eq!(program(0x1af4, 0x10f1, 0xff, 0, 0), Some("plaind"));
        assert_eq!(program(0x1af4, 0x10f2, 0xff, 0, 0), Some("plaind"));
        // Virtio block and a bridge have no driver here.
        assert_eq!(program(0x1af4, 0x1001, 1, 0, 0), None);
        assert_eq!(program(0x8086, 0x7450, 6, 4, 0), None);
    }

    #[test]
    fn resolve_program_prefers_driver_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            let p = d.join("drv");
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(a.path().join("plain"), "").unwrap();
        let path_var = Some(b.path().as_os_str().to_owned());
        assert_eq!(
            MatchTable::resolve_program("drv", &[a.path().to_path_buf()], path_var.clone()),
            Some(a.path().join("drv"))
        );
        assert_eq!(
            MatchTable::resolve_program("drv", &[], path_var.clone()),
            Some(b.path().join("drv"))
        );
        // Not executable, not found.
        assert_eq!(
            MatchTable::resolve_program("plain", &[a.path().to_path_buf()], None),
            None
        );
        assert_eq!(
            MatchTable::resolve_program("missing", &[a.path().to_path_buf()], path_var),
            None
        );
    }
}
