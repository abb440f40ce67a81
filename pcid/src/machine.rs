//! The simulated machine description (TOML).
//!
//! ```toml
//! [[function]]
//! address = "0000:00:1c.0"      # a PCIe root port
//! vendor = 0x8086
//! device = 0x7450
//! class = 0x06
//! subclass = 0x04
//! interface = 0x00
//!
//! [[function]]
//! address = "0000:01:00.0"
//! vendor = 0x1b36
//! device = 0x0010
//! class = 0x01
//! subclass = 0x08
//! interface = 0x02
//! revision = 2                  # optional, default 0
//! parent = "0000:00:1c.0"       # optional: the bridge this function sits behind
//! model = "nvme-00.toml"        # optional: the device model's description
//! ```
//!
//! Every `[[function]]` becomes a [`PciFunction`] whose backend is
//! [`FunctionBackend::Simulated`]. `model` names a file describing the
//! simulated device (relative paths are taken from the machine file's
//! directory); pcid neither reads nor sends it: it hands the file's path to
//! the function's driver in [`pcid_interface::PCID_SIM_MODEL`], as a real bus
//! tells a driver where its registers are. The file belongs to the driver's
//! test build and its device model (for NVMe, `nvme_sim::SimConfig`).
//!
//! Checks: unknown keys, wrong types and out-of-range values are reported by
//! toml with the offending line; empty `model` paths, duplicate addresses, a
//! `parent` that is not listed, a `parent` that is not a PCI-to-PCI bridge
//! (class 06, subclass 04) and parent cycles are reported with the line of
//! the function concerned.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};

use crate::location::{one_line, Location};

/// PCI class code of bridges.
pub const CLASS_BRIDGE: u8 = 0x06;
/// PCI subclass of PCI-to-PCI bridges (including PCIe root and downstream ports).
pub const SUBCLASS_PCI_BRIDGE: u8 = 0x04;

/// An error in a machine description.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The file could not be read.
    #[error("{path}: cannot read machine description: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{location}: {context}{message}")]
    Syntax {
        /// Where.
        location: Location,
        /// `function <address>: ` when the error is inside a known function, else empty.
        context: String,
        /// What toml reported.
        message: String,
    },
    /// A function's address does not parse.
    #[error("{location}: {source}")]
    BadAddress {
        /// Where.
        location: Location,
        /// The parse error.
        source: pcid_interface::function::AddressParseError,
    },
    /// Two functions have the same address.
    #[error(
        "{location}: function {address}: duplicate address (first defined at line {first_line})"
    )]
    Duplicate {
        /// Where the second definition is.
        location: Location,
        /// The address.
        address: PciAddress,
        /// Line of the first definition.
        first_line: usize,
    },
    /// `parent` names a function that is not listed.
    #[error("{location}: function {address}: parent {parent} is not a function of this machine")]
    MissingParent {
        /// Where.
        location: Location,
        /// The child.
        address: PciAddress,
        /// The missing parent.
        parent: PciAddress,
    },
    /// `parent` names a function that is not a PCI-to-PCI bridge.
    #[error("{location}: function {address}: parent {parent} is not a PCI-to-PCI bridge (class 06 subclass 04)")]
    ParentNotBridge {
        /// Where.
        location: Location,
        /// The child.
        address: PciAddress,
        /// The parent.
        parent: PciAddress,
    },
    /// Following `parent` links comes back to the same function.
    #[error("{location}: function {address}: parent chain forms a cycle: {}", DisplayChain(.chain))]
    Cycle {
        /// Where.
        location: Location,
        /// A function on the cycle.
        address: PciAddress,
        /// The cycle, starting and ending with `address`.
        chain: Vec<PciAddress>,
    },
}

struct DisplayChain<'a>(&'a [PciAddress]);

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineFile {
    /// Free-form name of the machine (informational).
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    function: Vec<Spanned<FunctionEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionEntry {
    address: Spanned<String>,
    vendor: u16,
    device: u16,
    class: u8,
    subclass: u8,
    interface: u8,
    #[serde(default)]
    revision: u8,
    #[serde(default)]
    parent: Option<Spanned<String>>,
    #[serde(default)]
    model: Option<Spanned<PathBuf>>,
}

/// Lenient view used only to say which function a syntax error is in.
#[derive(Deserialize)]
struct LooseMachine {
    #[serde(default)]
    function: Vec<Spanned<toml::Table>>,
}

/// A parsed machine description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The functions, in file order.
    pub functions: Vec<PciFunction>,
    /// The device model file of each function that has one (`model`),
    /// resolved against the machine file's directory.
    pub models: BTreeMap<PciAddress, PathBuf>,
}

impl Machine {
    /// Read and check the machine description at `path`.
    pub fn load(path: &Path) -> Result<Self, MachineError> {
        let text = std::fs::read_to_string(path).map_err(|source| MachineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parse and check a machine description; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, MachineError> {
        let file: MachineFile = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let context = span
                .as_ref()
                .and_then(|s| function_containing(text, s.start))
                .map(|a| format!("function {a}: "))
                .unwrap_or_default();
            MachineError::Syntax {
                location: Location::at_span(path, text, span),
                context,
                message: one_line(e.message()),
            }
        })?;

        let loc = |span: std::ops::Range<usize>| Location::at_offset(path, text, span.start);
        let mut functions = Vec::with_capacity(file.function.len());
        let mut lines: Vec<Location> = Vec::with_capacity(file.function.len());
        let mut first_seen: BTreeMap<PciAddress, usize> = BTreeMap::new();
        let mut models = BTreeMap::new();

        for entry in &file.function {
            let f = entry.get_ref();
            let addr_loc = loc(f.address.span());
            let address: PciAddress =
                f.address
                    .get_ref()
                    .parse()
                    .map_err(|source| MachineError::BadAddress {
                        location: addr_loc.clone(),
                        source,
                    })?;
            if let Some(&first_line) = first_seen.get(&address) {
                return Err(MachineError::Duplicate {
                    location: addr_loc,
                    address,
                    first_line,
                });
            }
            first_seen.insert(address, addr_loc.line);
            let parent = match &f.parent {
                None => None,
                Some(p) => Some(p.get_ref().parse::<PciAddress>().map_err(|source| {
                    MachineError::BadAddress {
                        location: loc(p.span()),
                        source,
                    }
                })?),
            };
            if let Some(model) = &f.model {
                if model.get_ref().as_os_str().is_empty() {
                    return Err(MachineError::Syntax {
                        location: loc(model.span()),
                        context: format!("function {address}: "),
                        message: "empty `model` path".to_string(),
                    });
                }
                let dir = path.parent().unwrap_or(Path::new(""));
                models.insert(address, dir.join(model.get_ref()));
            }
            functions.push(PciFunction {
                address,
                vendor: f.vendor,
                device: f.device,
                class: f.class,
                subclass: f.subclass,
                interface: f.interface,
                revision: f.revision,
                parent,
                backend: FunctionBackend::Simulated,
            });
            lines.push(match &f.parent {
                Some(p) => loc(p.span()),
                None => addr_loc,
            });
        }

        check_topology(&functions, &lines)?;
        Ok(Self { functions, models })
    }
}

/// Check that every parent exists, is a bridge, and that parent links are acyclic.
/// `locations[i]` is where function `i`'s parent (or address) is written.
pub(crate) fn check_topology(
    functions: &[PciFunction],
    locations: &[Location],
) -> Result<(), MachineError> {
    let by_addr: BTreeMap<PciAddress, &PciFunction> =
        functions.iter().map(|f| (f.address, f)).collect();
    for (i, f) in functions.iter().enumerate() {
        let location = locations
            .get(i)
            .cloned()
            .unwrap_or_else(|| Location::file(Path::new("")));
        let Some(parent) = f.parent else { continue };
        let Some(p) = by_addr.get(&parent) else {
            return Err(MachineError::MissingParent {
                location,
                address: f.address,
                parent,
            });
        };
        if p.class != CLASS_BRIDGE || p.subclass != SUBCLASS_PCI_BRIDGE {
            return Err(MachineError::ParentNotBridge {
                location,
                address: f.address,
                parent,
            });
        }
        // Walk up; at most `functions.len()` steps without a cycle.
        let mut chain = vec![f.address];
        let mut seen = BTreeSet::from([f.address]);
        let mut cur = parent;
        loop {
            chain.push(cur);
            if !seen.insert(cur) {
                if cur == f.address {
                    return Err(MachineError::Cycle {
                        location,
                        address: f.address,
                        chain,
                    });
                }
                // A cycle above us; it is reported when its own members are checked.
                break;
            }
            match by_addr.get(&cur).and_then(|p| p.parent) {
                Some(next) => cur = next,
                None => break,
            }
        }
    }
    Ok(())
}

/// The address of the `[[function]]` whose table contains byte `offset`, if any.
fn function_containing(text: &str, offset: usize) -> Option<String> {
    let loose: LooseMachine = toml::from_str(text).ok()?;
    loose
        .function
        .iter()
        .filter(|t| t.span().contains(&offset))
        .find_map(|t| {
            t.get_ref()
                .get("address")
                .and_then(|a| a.as_str())
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Machine, MachineError> {
        Machine::parse(Path::new("machine.toml"), text)
    }

    const NVME: &str = r#"
[[function]]
address = "0000:00:1c.0"
vendor = 0x8086
device = 0x7450
class = 6
subclass = 4
interface = 0

[[function]]
address = "0000:01:00.0"
vendor = 0x1b36
device = 0x0010
class = 1
subclass = 8
interface = 2
revision = 2
parent = "0000:00:1c.0"
model = "models/nvme-00.toml"
"#;

    #[test]
    fn parses_functions_and_model_paths() {
        let m = Machine::parse(Path::new("/run/sim/machine.toml"), NVME).unwrap();
        assert_eq!(m.functions.len(), 2);
        let nvme = &m.functions[1];
        assert_eq!(nvme.address.to_string(), "0000:01:00.0");
        assert_eq!((nvme.vendor, nvme.device), (0x1b36, 0x0010));
        assert_eq!((nvme.class, nvme.subclass, nvme.interface), (1, 8, 2));
        assert_eq!(nvme.revision, 2);
        assert_eq!(nvme.parent, Some("0000:00:1c.0".parse().unwrap()));
        assert_eq!(nvme.backend, FunctionBackend::Simulated);
        // The model path is the machine file's directory joined with `model`;
        // the root port has none.
        assert_eq!(
            m.models.get(&nvme.address).map(PathBuf::as_path),
            Some(Path::new("/run/sim/models/nvme-00.toml"))
        );
        assert_eq!(m.models.len(), 1);
        let absolute = NVME.replace("models/nvme-00.toml", "/elsewhere/n.toml");
        let m = Machine::parse(Path::new("/run/sim/machine.toml"), &absolute).unwrap();
        assert_eq!(
            m.models.values().next().map(PathBuf::as_path),
            Some(Path::new("/elsewhere/n.toml"))
        );
    }

    #[test]
    fn empty_model_path_names_line() {
        let text = NVME.replace("models/nvme-00.toml", "");
        let e = parse(&text).unwrap_err().to_string();
        assert_eq!(
            e,
            "machine.toml:19: function 0000:01:00.0: empty `model` path"
        );
    }

    #[test]
    fn the_old_inline_sim_table_is_an_unknown_key() {
        let text = format!("{NVME}[function.sim]\nserial = \"A\"\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("unknown field `sim`"), "{e}");
    }

    #[test]
    fn empty_machine_is_valid() {
        assert!(parse("").unwrap().functions.is_empty());
    }

    #[test]
    fn unknown_key_names_line_and_function() {
        let text = NVME.replace("subclass = 8", "subclas = 8");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("machine.toml:15: function 0000:01:00.0: unknown field `subclas`"),
            "{e}"
        );
    }

    #[test]
    fn out_of_range_value_names_line() {
        let text = NVME.replace("vendor = 0x1b36", "vendor = 0x11b36");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("machine.toml:12: function 0000:01:00.0:"),
            "{e}"
        );
    }

    #[test]
    fn missing_key_is_reported() {
        let text = NVME.replace("interface = 2\n", "");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("missing field `interface`"), "{e}");
        assert!(e.starts_with("machine.toml:10:"), "{e}");
    }

    #[test]
    fn bad_toml_names_line() {
        let e = parse("[[function]]\naddress = \n").unwrap_err().to_string();
        assert!(e.starts_with("machine.toml:2:"), "{e}");
    }

    #[test]
    fn bad_address_names_line() {
        let text = NVME.replace("\"0000:01:00.0\"", "\"0000:01:00\"");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("machine.toml:11: invalid PCI address"), "{e}");
    }

    #[test]
    fn duplicate_address() {
        let text = NVME.replace("\"0000:01:00.0\"", "\"0000:00:1c.0\"");
        let e = parse(&text).unwrap_err().to_string();
        assert_eq!(
            e,
            "machine.toml:11: function 0000:00:1c.0: duplicate address (first defined at line 3)"
        );
    }

    #[test]
    fn missing_parent() {
        let text = NVME.replace("parent = \"0000:00:1c.0\"", "parent = \"0000:00:1d.0\"");
        let e = parse(&text).unwrap_err().to_string();
        assert_eq!(
            e,
            "machine.toml:18: function 0000:01:00.0: parent 0000:00:1d.0 is not a function of this machine"
        );
    }

    #[test]
    fn parent_must_be_bridge() {
        let text = NVME.replace("subclass = 4", "subclass = 0");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("is not a PCI-to-PCI bridge"), "{e}");
    }

    #[test]
    fn parent_cycle() {
        let text = r#"
[[function]]
address = "0000:00:01.0"
vendor = 1
device = 1
class = 6
subclass = 4
interface = 0
parent = "0000:00:02.0"

[[function]]
address = "0000:00:02.0"
vendor = 1
device = 1
class = 6
subclass = 4
interface = 0
parent = "0000:00:01.0"
"#;
        let e = parse(text).unwrap_err().to_string();
        assert_eq!(
            e,
            "machine.toml:9: function 0000:00:01.0: parent chain forms a cycle: \
             0000:00:01.0 -> 0000:00:02.0 -> 0000:00:01.0"
        );
        let self_loop = text.replace("parent = \"0000:00:02.0\"", "parent = \"0000:00:01.0\"");
        let e = parse(&self_loop).unwrap_err().to_string();
        assert!(e.contains("0000:00:01.0 -> 0000:00:01.0"), "{e}");
    }

    #[test]
    fn unknown_top_level_key() {
        let e = parse("machine = 1\n").unwrap_err().to_string();
        assert!(
            e.starts_with("machine.toml:1: unknown field `machine`"),
            "{e}"
        );
    }
}
