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

use std::collections::BTreeMap;

/// `-trace` patterns the runners enable.
pub const TRACE_EVENTS: &[&str] = &[
    "memory_region_ops_write",
    "pci_nvme_mmio_shutdown_set",
    "pci_nvme_mmio_shutdown_cleared",
    "pci_nvme_flush_ns",
    "pci_nvme_io_cmd",
];

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
                "pci_nvme_io_cmd" if hex_field(line, "opc") == Some(0) => t.flush_cmds += 1,
                _ => {}
            }
        }
        t
    }

    /// Controllers that got a shutdown notification the model acted on.
    pub fn notified(&self) -> usize {
        self.controllers.values().filter(|c| c.notified()).count()
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
