//! What QEMU's own NVMe model says happened: its trace log, as a judge that
//! is not this project's code.
//!
//! Both QEMU runners start QEMU with [`TRACE_EVENTS`] enabled and the log in
//! a file (`-D`). QEMU's NVMe trace events carry no controller identity, so
//! controllers are told apart by the generic MMIO trace
//! (`memory_region_ops_write`), which names the region (`'nvme'`) and the
//! guest-physical address written: BAR0 of each controller is a separate
//! 16 KiB window. A controller counts as notified when the guest wrote
//! CC (offset 0x14) with a non-zero CC.SHN field and the model answered that
//! very write with `pci_nvme_mmio_shutdown_set` (the event QEMU emits when
//! it starts the controller's shutdown).
//!
//! I/O commands (`pci_nvme_io_cmd`) carry a namespace id but no controller
//! either. Runs that need to know which controller an I/O command went to
//! give every controller its own PCI slot and namespace id on QEMU's command
//! line, and find the controller's BAR0 from QEMU's PCI core
//! (`pci_update_mappings_add`, which names bus:slot.function, the BAR and
//! the address the firmware or OS mapped it at): [`NvmeTrace::bar0_of`].
//! (Guessing from the order of admin doorbells and `pci_nvme_identify_ns`
//! does not work: drivers bring their controllers up concurrently and each
//! identifies every namespace id.)

use std::collections::BTreeMap;

/// `-trace` patterns the runners enable.
pub const TRACE_EVENTS: &[&str] = &[
    "memory_region_ops_write",
    "pci_nvme_mmio_shutdown_set",
    "pci_nvme_mmio_shutdown_cleared",
    "pci_nvme_flush_ns",
    "pci_nvme_io_cmd",
    "pci_update_mappings_add",
];

/// NVM opcodes as `pci_nvme_io_cmd` prints them.
pub mod opcode {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
}

/// One I/O command as QEMU's model fetched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoCmd {
    /// Line number (0-based) in the trace.
    pub line: usize,
    /// Namespace id.
    pub nsid: u32,
    /// NVM opcode ([`opcode`]).
    pub opcode: u8,
}

/// QEMU's NVMe BAR0 size: controllers are told apart by their BAR0 window.
pub const NVME_BAR0_SIZE: u64 = 0x4000;

/// Offset of CC in BAR0.
const CC: u64 = 0x14;

/// One controller as seen in the trace (keyed by its BAR0 address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerTrace {
    /// Guest-physical BAR0 address.
    pub bar0: u64,
    /// Values written to CC with CC.SHN != 0, in order.
    pub shn_writes: Vec<u32>,
    /// How many of those writes the model answered with `pci_nvme_mmio_shutdown_set`.
    pub shutdown_set: usize,
    /// Line numbers (0-based) of the first CC.SHN write.
    pub first_shn_line: Option<usize>,
    /// Line numbers of every CC write with CC.SHN=01b (normal shutdown).
    pub normal_shn_lines: Vec<usize>,
}

impl ControllerTrace {
    /// Whether the controller got a normal shutdown notification (CC.SHN=01b)
    /// that QEMU's model acted on.
    pub fn notified(&self) -> bool {
        self.shutdown_set > 0 && self.shn_writes.iter().any(|v| (v >> 14) & 3 == 1)
    }
}

/// Everything the checks need from one trace log.
#[derive(Debug, Clone, Default)]
pub struct NvmeTrace {
    /// Controllers the guest wrote registers of, by BAR0 address.
    pub controllers: BTreeMap<u64, ControllerTrace>,
    /// `pci_nvme_flush_ns` events (namespace flushes by the model: from a
    /// Flush command or from the shutdown itself).
    pub flush_ns: usize,
    /// NVMe Flush commands submitted on I/O queues (`pci_nvme_io_cmd` with
    /// opcode 0x0).
    pub flush_cmds: usize,
    /// Trace lines read.
    pub lines: usize,
    /// Every I/O command, in trace order.
    pub io: Vec<IoCmd>,
    /// (bus, slot, function, BAR index) → every address QEMU mapped the BAR
    /// at (`pci_update_mappings_add`), in order: sizing the BAR maps it
    /// briefly at odd addresses before the real one comes back.
    pub bars: BTreeMap<(u8, u8, u8, u8), Vec<u64>>,
}

/// Strips the optional `PID@SECONDS:` prefix QEMU adds with `-msg timestamp=on`.
fn event_text(line: &str) -> &str {
    if let Some((head, rest)) = line.split_once(':') {
        if let Some((pid, time)) = head.split_once('@') {
            if !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && time.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            {
                return rest;
            }
        }
    }
    line
}

/// `00:01.0` and `0,0xfebe0000+0x4000` of a `pci_update_mappings_add` line.
fn bar_mapping(bdf: Option<&str>, bar: Option<&str>) -> Option<((u8, u8, u8, u8), u64)> {
    let (bus, rest) = bdf?.split_once(':')?;
    let (slot, func) = rest.split_once('.')?;
    let (index, range) = bar?.split_once(',')?;
    let addr = range.split('+').next()?.trim_start_matches("0x");
    let hex = |v: &str| u8::from_str_radix(v, 16).ok();
    Some((
        (hex(bus)?, hex(slot)?, hex(func)?, index.parse().ok()?),
        u64::from_str_radix(addr, 16).ok()?,
    ))
}

fn hex_field(text: &str, key: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            let v = words.next()?;
            return u64::from_str_radix(v.trim_start_matches("0x"), 16).ok();
        }
    }
    None
}

impl NvmeTrace {
    /// Reads a trace log.
    pub fn parse(text: &str) -> Self {
        let mut t = Self::default();
        // The controller whose CC write with SHN set came last, waiting for
        // the model's answer to it.
        let mut pending: Option<u64> = None;
        for (n, raw) in text.lines().enumerate() {
            t.lines += 1;
            let line = event_text(raw.trim_end());
            let mut words = line.split_whitespace();
            let Some(event) = words.next() else { continue };
            match event {
                "memory_region_ops_write" => {
                    if !line.ends_with("name 'nvme'") {
                        continue;
                    }
                    pending = None;
                    let (Some(addr), Some(value)) =
                        (hex_field(line, "addr"), hex_field(line, "value"))
                    else {
                        continue;
                    };
                    let bar0 = addr & !(NVME_BAR0_SIZE - 1);
                    let c = t
                        .controllers
                        .entry(bar0)
                        .or_insert_with(|| ControllerTrace {
                            bar0,
                            ..ControllerTrace::default()
                        });
                    if addr - bar0 == CC && (value >> 14) & 3 != 0 {
                        c.shn_writes.push(value as u32);
                        c.first_shn_line.get_or_insert(n);
                        if (value >> 14) & 3 == 1 {
                            c.normal_shn_lines.push(n);
                        }
                        pending = Some(bar0);
                    }
                }
                "pci_nvme_mmio_shutdown_set" => {
                    if let Some(bar0) = pending.take() {
                        if let Some(c) = t.controllers.get_mut(&bar0) {
                            c.shutdown_set += 1;
                        }
                    }
                }
                "pci_nvme_flush_ns" => t.flush_ns += 1,
                "pci_nvme_io_cmd" => {
                    let (Some(nsid), Some(opc)) = (hex_field(line, "nsid"), hex_field(line, "opc"))
                    else {
                        continue;
                    };
                    if opc == u64::from(opcode::FLUSH) {
                        t.flush_cmds += 1;
                    }
                    t.io.push(IoCmd {
                        line: n,
                        nsid: nsid as u32,
                        opcode: opc as u8,
                    });
                }
                "pci_update_mappings_add" => {
                    // d=0x55d0… 00:01.0 0,0xfebe0000+0x4000
                    if let Some((key, addr)) = bar_mapping(words.nth(1), words.next()) {
                        t.bars.entry(key).or_default().push(addr);
                    }
                }
                _ => {}
            }
        }
        t
    }

    /// BAR0 of the NVMe controller at `bus:slot.function`: the last address
    /// QEMU mapped it at that the guest wrote NVMe registers through (a
    /// sizing probe's transient mapping never is), else the last mapping.
    pub fn bar0_of(&self, bus: u8, slot: u8, function: u8) -> Option<u64> {
        let all = self.bars.get(&(bus, slot, function, 0))?;
        all.iter()
            .rev()
            .find(|a| self.controllers.contains_key(a))
            .or(all.last())
            .copied()
    }

    /// Controllers that got a shutdown notification the model acted on.
    pub fn notified(&self) -> usize {
        self.controllers.values().filter(|c| c.notified()).count()
    }

    /// I/O commands of namespace `nsid` with `opcode`, in order.
    pub fn io_of(&self, nsid: u32, opcode: u8) -> impl Iterator<Item = &IoCmd> {
        self.io
            .iter()
            .filter(move |c| c.nsid == nsid && c.opcode == opcode)
    }

    /// Line of the last command of namespace `nsid` with `opcode`.
    pub fn last_io(&self, nsid: u32, opcode: u8) -> Option<usize> {
        self.io_of(nsid, opcode).map(|c| c.line).last()
    }
}

/// QEMU arguments that enable the events and send the log to `path`.
pub fn qemu_args(path: &std::path::Path) -> Vec<String> {
    let mut args = Vec::new();
    for e in TRACE_EVENTS {
        args.push("-trace".to_string());
        args.push(e.to_string());
    }
    args.push("-D".to_string());
    args.push(path.display().to_string());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(bar: u64, off: u64, value: u64) -> String {
        format!(
            "memory_region_ops_write cpu 0 mr 0x55d0 addr {:#x} value {value:#x} size 4 name 'nvme'",
            bar + off
        )
    }

    #[test]
    fn a_controller_counts_only_when_the_model_answers_its_shn_write() {
        let a = 0xfebf0000u64;
        let b = 0xfebf4000u64;
        let log = [
            w(a, 0x14, 0x460001),
            "memory_region_ops_write cpu 0 mr 0x1 addr 0x3f8 value 0x41 size 1 name 'serial'".to_string(),
            w(a, 0x14, 0x464001),
            "pci_nvme_mmio_write addr 0x14 data 0x464001 size 4".to_string(),
            "pci_nvme_mmio_shutdown_set shutdown bit set".to_string(),
            "pci_nvme_flush_ns nsid 1".to_string(),
            // b: SHN written but the model never acted on it
            w(b, 0x14, 0x464001),
            w(b, 0x1000, 0x1),
            "pci_nvme_mmio_shutdown_set shutdown bit set".to_string(),
            "12345@1796317494.353619:pci_nvme_io_cmd cid 3 nsid 0x1 sqid 1 opc 0x0 opname 'NVME_NVM_CMD_FLUSH'".to_string(),
        ]
        .join("\n");
        let t = NvmeTrace::parse(&log);
        assert_eq!(t.controllers.len(), 2);
        assert!(t.controllers[&a].notified());
        assert_eq!(t.controllers[&a].shn_writes, vec![0x464001]);
        assert!(
            !t.controllers[&b].notified(),
            "the answer came after another write"
        );
        assert_eq!(t.notified(), 1);
        assert_eq!(t.flush_ns, 1);
        assert_eq!(t.flush_cmds, 1);
    }

    #[test]
    fn io_commands_are_listed_and_bars_found_from_the_pci_core() {
        let a = 0xfebf0000u64;
        let b = 0xfebf4000u64;
        let log = [
            "pci_update_mappings_add d=0x55d0a1051df0 00:01.0 0,0xfebf0000+0x4000".to_string(),
            "pci_update_mappings_add nvme 00:01.0 0,0xffffc000+0x4000".to_string(),
            "pci_update_mappings_add d=0x55d0a1106740 00:02.0 0,0xfebf4000+0x4000".to_string(),
            "pci_update_mappings_add d=0x55d0a1106740 00:02.0 4,0xfe000000+0x1000".to_string(),
            w(a, 0x1000, 0x3),
            w(b, 0x1000, 0x5),
            "pci_nvme_io_cmd cid 7 nsid 0x1 sqid 1 opc 0x1 opname 'NVME_NVM_CMD_WRITE'".to_string(),
            "pci_nvme_io_cmd cid 8 nsid 0x2 sqid 1 opc 0x0 opname 'NVME_NVM_CMD_FLUSH'".to_string(),
            "pci_nvme_io_cmd cid 9 nsid 0x1 sqid 1 opc 0x1 opname 'NVME_NVM_CMD_WRITE'".to_string(),
            w(a, 0x14, 0x464001),
            "pci_nvme_mmio_shutdown_set shutdown bit set".to_string(),
        ]
        .join("\n");
        let t = NvmeTrace::parse(&log);
        assert_eq!(t.bar0_of(0, 1, 0), Some(a));
        assert_eq!(t.bar0_of(0, 2, 0), Some(b));
        assert_eq!(t.bar0_of(0, 3, 0), None);
        assert_eq!(t.bars[&(0, 2, 0, 4)], [0xfe000000]);
        assert_eq!(t.io.len(), 3);
        assert_eq!(t.last_io(1, opcode::WRITE), Some(8));
        assert_eq!(t.last_io(2, opcode::FLUSH), Some(7));
        assert_eq!(t.last_io(2, opcode::WRITE), None);
        assert_eq!(t.controllers[&a].normal_shn_lines, vec![9]);
        assert_eq!(t.flush_cmds, 1);
    }

    #[test]
    fn an_abrupt_shutdown_is_not_a_normal_notification() {
        let a = 0xfe000000u64;
        let log = [
            w(a, 0x14, 0x468001),
            "pci_nvme_mmio_shutdown_set shutdown bit set".to_string(),
        ]
        .join("\n");
        let t = NvmeTrace::parse(&log);
        assert_eq!(t.controllers[&a].shutdown_set, 1);
        assert!(!t.controllers[&a].notified());
    }

    #[test]
    fn timestamp_prefixes_are_optional() {
        assert_eq!(
            event_text("1@2.5:pci_nvme_flush_ns nsid 1"),
            "pci_nvme_flush_ns nsid 1"
        );
        assert_eq!(
            event_text("pci_nvme_flush_ns nsid 1"),
            "pci_nvme_flush_ns nsid 1"
        );
        assert_eq!(event_text("a@b:c"), "a@b:c");
    }
}
