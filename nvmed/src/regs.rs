//! The controller's registers (NVMe Base Specification 1.4, §3.1), typed.
//!
//! [`Registers`] is the only place in the driver that names a BAR0 offset:
//! every read and write of CAP, VS, CC, CSTS, AQA, ASQ, ACQ and the
//! doorbells goes through it, as the typed values of [`nvme_spec`]. A read
//! of CAP, CC or CSTS that returns all-ones — on PCI, a device that no longer
//! answers — is [`NvmeError::DeviceGone`] naming the step, so no caller
//! decodes a vanished device's registers as if they were real.

use nvme_spec::regs::{cq_head_doorbell, is_all_ones32, offset, sq_tail_doorbell};
use nvme_spec::{Aqa, Cap, Cc, Csts, Version};
use pcid_hw::RegisterIo;

use crate::NvmeError;

/// BAR0 of one controller, read and written as typed registers.
pub(crate) struct Registers<R> {
    bar: R,
}

/// The two doorbells of one queue pair (§3.1.24, §3.1.25), placed by the
/// controller's doorbell stride.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Doorbells {
    sq_tail: usize,
    cq_head: usize,
}

impl Doorbells {
    /// The doorbells of queue pair `qid` for doorbell stride CAP.DSTRD `dstrd`.
    pub(crate) fn new(qid: u16, dstrd: u8) -> Self {
        Self {
            sq_tail: sq_tail_doorbell(qid, dstrd),
            cq_head: cq_head_doorbell(qid, dstrd),
        }
    }
}

impl<R: RegisterIo> Registers<R> {
    /// The registers in the window `bar` (BAR0).
    pub(crate) fn new(bar: R) -> Self {
        Self { bar }
    }

    /// Controller Capabilities (CAP).
    pub(crate) fn cap(&self, step: &'static str) -> Result<Cap, NvmeError> {
        let v = self.bar.read64(offset::CAP);
        if v == u64::MAX {
            return Err(NvmeError::DeviceGone { step });
        }
        Ok(Cap::from_bits(v))
    }

    /// Version (VS). Informational: not checked for all-ones.
    pub(crate) fn version(&self) -> Version {
        Version::from_bits(self.bar.read32(offset::VS))
    }

    /// Controller Configuration (CC).
    pub(crate) fn cc(&self, step: &'static str) -> Result<Cc, NvmeError> {
        let v = self.bar.read32(offset::CC);
        if is_all_ones32(v) {
            return Err(NvmeError::DeviceGone { step });
        }
        Ok(Cc::from_bits(v))
    }

    /// Writes CC.
    pub(crate) fn set_cc(&self, cc: Cc) {
        self.bar.write32(offset::CC, cc.into_bits());
    }

    /// Controller Status (CSTS).
    pub(crate) fn csts(&self, step: &'static str) -> Result<Csts, NvmeError> {
        let csts = Csts::from_bits(self.bar.read32(offset::CSTS));
        if csts.is_all_ones() {
            return Err(NvmeError::DeviceGone { step });
        }
        Ok(csts)
    }

    /// Programs the admin queues: AQA (sizes), then ASQ and ACQ (bus
    /// addresses of the submission and completion queue).
    pub(crate) fn set_admin_queues(&self, aqa: Aqa, asq: u64, acq: u64) {
        self.bar.write32(offset::AQA, aqa.into_bits());
        self.bar.write64(offset::ASQ, asq);
        self.bar.write64(offset::ACQ, acq);
    }

    /// Rings the submission queue tail doorbell of `doorbells` with `tail`.
    pub(crate) fn ring_sq_tail(&self, doorbells: Doorbells, tail: u16) {
        self.bar.write32(doorbells.sq_tail, u32::from(tail));
    }

    /// Rings the completion queue head doorbell of `doorbells` with `head`.
    pub(crate) fn ring_cq_head(&self, doorbells: Doorbells, head: u16) {
        self.bar.write32(doorbells.cq_head, u32::from(head));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use nvme_spec::{ShutdownNotification, ShutdownStatus};

    use super::*;

    /// A register window that records writes and answers reads from a map.
    #[derive(Default)]
    struct Window {
        values: Mutex<std::collections::BTreeMap<usize, u32>>,
    }

    impl RegisterIo for Window {
        fn size(&self) -> usize {
            0x2000
        }
        fn read32(&self, offset: usize) -> u32 {
            *self.values.lock().unwrap().get(&offset).unwrap_or(&0)
        }
        fn write32(&self, offset: usize, value: u32) {
            self.values.lock().unwrap().insert(offset, value);
        }
    }

    #[test]
    fn all_ones_is_device_gone_naming_the_step() {
        let regs = Registers::new(Window::default());
        for off in [offset::CAP, offset::CAP + 4, offset::CC, offset::CSTS] {
            regs.bar.write32(off, u32::MAX);
        }
        assert!(matches!(
            regs.cap("read CAP"),
            Err(NvmeError::DeviceGone { step: "read CAP" })
        ));
        assert!(matches!(
            regs.cc("read CC"),
            Err(NvmeError::DeviceGone { step: "read CC" })
        ));
        assert!(matches!(
            regs.csts("read CSTS"),
            Err(NvmeError::DeviceGone { step: "read CSTS" })
        ));
    }

    #[test]
    fn typed_values_land_at_their_offsets() {
        let regs = Registers::new(Window::default());
        regs.set_cc(
            Cc::new()
                .with_en(true)
                .with_shutdown(ShutdownNotification::Normal),
        );
        assert_eq!(regs.bar.read32(offset::CC), 0x4001);
        assert!(regs.cc("read CC").unwrap().en());
        regs.bar.write32(offset::CSTS, 0b1001);
        let csts = regs.csts("read CSTS").unwrap();
        assert!(csts.rdy());
        assert_eq!(csts.shutdown_status(), ShutdownStatus::Complete);
        let aqa = Aqa::for_entries(32, 16).unwrap();
        regs.set_admin_queues(aqa, 0x1234_5000, 0x0000_0001_0000_2000);
        assert_eq!(regs.bar.read32(offset::AQA), aqa.into_bits());
        assert_eq!(regs.bar.read64(offset::ASQ), 0x1234_5000);
        assert_eq!(regs.bar.read64(offset::ACQ), 0x0000_0001_0000_2000);
    }

    #[test]
    fn doorbells_follow_the_stride() {
        let regs = Registers::new(Window::default());
        // Queue pair 1 with DSTRD=1 (8-byte stride): SQ1TDBL at 0x1010,
        // CQ1HDBL at 0x1018 (§3.1.24-25).
        let bells = Doorbells::new(1, 1);
        regs.ring_sq_tail(bells, 5);
        regs.ring_cq_head(bells, 7);
        assert_eq!(regs.bar.read32(0x1010), 5);
        assert_eq!(regs.bar.read32(0x1018), 7);
    }
}
