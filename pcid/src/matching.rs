//! Driver match tables in Redox's `pcid.d` format, with the semantics of
//! Redox's pcid-spawner and `pcid_interface::config` (base, January 2026).
//!
//! A table is a file, or a directory whose files are concatenated into one
//! document, with `[[drivers]]` entries:
//!
//! ```toml
//! [[drivers]]
//! name = "NVMe storage"      # optional, for logs
//! class = 1                  # optional: class code
//! subclass = 8               # optional: subclass
//! interface = 2              # optional: programming interface
//! vendor = 0x1b36            # optional: vendor id (ignored when `ids` is present)
//! device = 0x0010            # optional: device id (ignored when `ids` is present)
//! ids = { 0x1af4 = [0x10f0, 0x10f1] }   # optional: vendor (hex key) -> device ids
//! device_id_range = { start = 0x1000, end = 0x1040 }  # optional, end exclusive
//! command = ["nvmed"]        # required: program and arguments
//! ```
//!
//! Matching, as Redox's `DriverConfig::match_function`:
//!
//! * every present key among `class`, `subclass`, `interface`,
//!   `device_id_range` must match;
//! * `ids`, when present, decides the vendor and device alone: the function
//!   matches if its vendor is a key (hexadecimal, with or without `0x`) and
//!   its device is in that key's list; `vendor` and `device` are then not
//!   looked at. Without `ids`, present `vendor`/`device` keys must match;
//! * the first matching entry wins, in document order.
//!
//! Loading, as Redox's pcid-spawner: a directory's files (every file, any
//! name) are concatenated and parsed as one document; keys Redox does not
//! know (e.g. xhcid's `use_channel`) are ignored; `command` is required.
//! Where Redox's behaviour is left to chance or would panic this
//! implementation is deterministic and reports a typed error naming the file
//! and line: files are read in name order (Redox: directory order); a
//! newline is inserted after a file that lacks one (Redox would join its last
//! line with the next file's first); an `ids` key that is not a 16-bit
//! hexadecimal number is an error (Redox panics, or truncates it); an empty
//! command is an error.
//!
//! Resolving the program: Redox's pcid-spawner uses an absolute `command[0]`
//! as is and puts any other under `/usr/lib/drivers/` ([`redox_program`]).
//! On Linux and the simulated machine, which have no `/usr/lib/drivers`,
//! pcid searches its `--driver-path` directories, then `PATH`
//! ([`MatchTable::resolve_program`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use pcid_interface::function::PciFunction;

use crate::location::{one_line, Location};

/// Where Redox's pcid-spawner finds a driver named without a path.
pub const REDOX_DRIVER_DIR: &str = "/usr/lib/drivers";

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
    /// The table is not valid TOML or an entry has a bad key or value.
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
struct TableFile {
    #[serde(default)]
    drivers: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
struct RawEntry {
    name: Option<String>,
    class: Option<u8>,
    subclass: Option<u8>,
    interface: Option<u8>,
    vendor: Option<u16>,
    device: Option<u16>,
    ids: Option<BTreeMap<Spanned<String>, Vec<u16>>>,
    device_id_range: Option<DeviceIdRange>,
    command: Spanned<Vec<String>>,
    // Keys Redox's format does not define are ignored, as Redox ignores them
    // (no `deny_unknown_fields`).
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
    /// Required vendor id (unless `ids` is present).
    pub vendor: Option<u16>,
    /// Required device id (unless `ids` is present).
    pub device: Option<u16>,
    /// Accepted (vendor, device) pairs; overrides `vendor` and `device`.
    pub ids: Option<BTreeMap<u16, Vec<u16>>>,
    /// Accepted device id range.
    pub device_id_range: Option<DeviceIdRange>,
    /// Program and arguments (never empty).
    pub command: Vec<String>,
    /// Where the entry is defined.
    pub location: Location,
}

impl DriverEntry {
    /// Whether the entry matches `f` (see the module documentation).
    pub fn matches(&self, f: &PciFunction) -> bool {
        let ids_match = match &self.ids {
            Some(ids) => ids
                .get(&f.vendor)
                .is_some_and(|devices| devices.contains(&f.device)),
            None => {
                self.vendor.is_none_or(|v| v == f.vendor)
                    && self.device.is_none_or(|d| d == f.device)
            }
        };
        self.class.is_none_or(|c| c == f.class)
            && self.subclass.is_none_or(|s| s == f.subclass)
            && self.interface.is_none_or(|i| i == f.interface)
            && ids_match
            && self
                .device_id_range
                .is_none_or(|r| r.start <= f.device && f.device < r.end)
    }

    /// The program (`command[0]`).
    pub fn program(&self) -> &str {
        self.command.first().map_or("", String::as_str)
    }
}

/// Where Redox's pcid-spawner runs `program` from: as is when absolute,
/// else under [`REDOX_DRIVER_DIR`].
pub fn redox_program(program: &str) -> PathBuf {
    if program.starts_with('/') {
        PathBuf::from(program)
    } else {
        PathBuf::from(format!("{REDOX_DRIVER_DIR}/{program}"))
    }
}

/// Files joined into one document, remembering where each one starts.
struct Joined {
    text: String,
    /// (file, byte offset of its first byte in `text`), in order.
    parts: Vec<(PathBuf, usize)>,
}

impl Joined {
    fn locate(&self, offset: Option<usize>) -> Location {
        let Some(offset) = offset else {
            return match &self.parts[..] {
                [(file, _)] => Location::file(file),
                _ => Location::file(Path::new("(match tables)")),
            };
        };
        let index = self
            .parts
            .iter()
            .rposition(|(_, start)| *start <= offset)
            .unwrap_or(0);
        let (file, start) = &self.parts[index];
        let end = self.parts.get(index + 1).map_or(self.text.len(), |p| p.1);
        Location::at_offset(file, &self.text[*start..end], offset - start)
    }
}

/// All entries of a table, in match order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchTable {
    /// Entries in document order.
    pub entries: Vec<DriverEntry>,
}

impl MatchTable {
    /// Loads a table file, or every file of a directory (name order,
    /// concatenated); files that cannot be read as text (subdirectories) are
    /// skipped, as Redox's pcid-spawner skips them.
    pub fn load(path: &Path) -> Result<Self, MatchError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| MatchError::Io { path: p, source }
        };
        let meta = std::fs::metadata(path).map_err(io(path))?;
        let mut joined = Joined {
            text: String::new(),
            parts: Vec::new(),
        };
        if meta.is_file() {
            joined.text = std::fs::read_to_string(path).map_err(io(path))?;
            joined.parts.push((path.to_path_buf(), 0));
        } else {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(io(path))? {
                files.push(entry.map_err(io(path))?.path());
            }
            files.sort();
            for file in files {
                let Ok(text) = std::fs::read_to_string(&file) else {
                    log::debug!("{}: not a readable text file; skipped", file.display());
                    continue;
                };
                joined.parts.push((file, joined.text.len()));
                joined.text.push_str(&text);
                if !text.is_empty() && !text.ends_with('\n') {
                    joined.text.push('\n');
                }
            }
            if joined.parts.is_empty() {
                joined.parts.push((path.to_path_buf(), 0));
            }
        }
        Self::parse_joined(&joined)
    }

    /// Parses one table document; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, MatchError> {
        Self::parse_joined(&Joined {
            text: text.to_string(),
            parts: vec![(path.to_path_buf(), 0)],
        })
    }

    fn parse_joined(joined: &Joined) -> Result<Self, MatchError> {
        let text = &joined.text;
        let at = |span: Option<std::ops::Range<usize>>| joined.locate(span.map(|s| s.start));
        let file: TableFile = toml::from_str(text).map_err(|e| MatchError::Invalid {
            location: at(e.span()),
            message: one_line(e.message()),
        })?;
        let mut entries = Vec::with_capacity(file.drivers.len());
        for raw in file.drivers {
            let location = at(Some(raw.span()));
            let raw = raw.into_inner();
            let ids = match raw.ids {
                None => None,
                Some(map) => {
                    let mut ids = BTreeMap::new();
                    for (vendor, devices) in map {
                        let digits = vendor.get_ref().trim_start_matches("0x");
                        let v =
                            u16::from_str_radix(digits, 16).map_err(|_| MatchError::Invalid {
                                location: at(Some(vendor.span())),
                                message: format!(
                                    "ids: key {:?} is not a 16-bit hexadecimal vendor id (e.g. 0x8086)",
                                    vendor.get_ref()
                                ),
                            })?;
                        ids.entry(v).or_insert_with(Vec::new).extend(devices);
                    }
                    Some(ids)
                }
            };
            let command_span = raw.command.span();
            let command = raw.command.into_inner();
            if command.first().is_none_or(|p| p.is_empty()) {
                return Err(MatchError::Invalid {
                    location: at(Some(command_span)),
                    message: "command: must name a program".to_string(),
                });
            }
            if let Some(r) = raw.device_id_range {
                if r.start >= r.end {
                    log::warn!(
                        "{location}: device_id_range {:#06x}..{:#06x} is empty (end is exclusive); \
                         the entry matches nothing",
                        r.start,
                        r.end
                    );
                }
            }
            let name = raw.name.unwrap_or_else(|| command[0].clone());
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

    /// Resolve a program name off Redox: a name containing `/` is used as
    /// is; otherwise the first executable file named `program` in
    /// `driver_dirs`, then in `PATH`. Returns `None` when nothing is found.
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
mod tests;
