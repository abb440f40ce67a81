//! Decoding arbitrary bytes never panics and round-trips where it should;
//! builders given arbitrary values return a value or an error, never panic.

use nvme_spec::cmd::{CompletionEntry, NumberOfQueues, QueueDw10, SubmissionEntry};
use nvme_spec::identify::{
    AsciiString, IdentifyController, IdentifyNamespace, NamespaceList, QueueEntrySize,
    IDENTIFY_SIZE,
};
use nvme_spec::{Aqa, Cc, Csts, NvmOpcode, ShutdownNotification, SpecError, Status};
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let too_short = |r: Result<(), SpecError>, size: usize| {
            prop_assert_eq!(r.is_err(), bytes.len() < size);
            Ok(())
        };
        too_short(CompletionEntry::from_bytes(&bytes).map(|_| ()), 16)?;
        too_short(SubmissionEntry::from_bytes(&bytes).map(|_| ()), 64)?;
        match IdentifyController::from_bytes(&bytes) {
            Ok(id) => {
                let _ = (id.max_transfer_bytes(4096), id.serial(), id.model(), id.firmware());
            }
            Err(e) => prop_assert!(bytes.len() < IDENTIFY_SIZE, "{e}"),
        }
        match IdentifyNamespace::from_bytes(&bytes) {
            Ok(ns) => {
                let _ = (ns.block_size(), ns.current_format());
            }
            Err(e) => prop_assert!(bytes.len() < IDENTIFY_SIZE, "{e}"),
        }
        match NamespaceList::from_bytes(&bytes) {
            Ok(list) => prop_assert!(list.active().len() <= 1024),
            Err(e) => prop_assert!(bytes.len() < IDENTIFY_SIZE, "{e}"),
        }
    }

    #[test]
    fn identify_pages_round_trip(bytes in proptest::collection::vec(any::<u8>(), IDENTIFY_SIZE)) {
        prop_assert_eq!(IdentifyController::from_bytes(&bytes).unwrap().to_bytes().to_vec(), bytes.clone());
        prop_assert_eq!(IdentifyNamespace::from_bytes(&bytes).unwrap().to_bytes().to_vec(), bytes.clone());
        prop_assert_eq!(NamespaceList::from_bytes(&bytes).unwrap().to_bytes().to_vec(), bytes);
    }

    #[test]
    fn completion_entries_round_trip(bytes in proptest::array::uniform16(any::<u8>())) {
        let c = CompletionEntry::from_bytes(&bytes).unwrap();
        prop_assert_eq!(c.to_bytes(), bytes);
        // Rewriting the status and phase from their decoded values changes nothing.
        prop_assert_eq!(c.with_status(c.status()).with_phase(c.phase()).to_bytes(), bytes);
    }

    #[test]
    fn submission_entries_round_trip(bytes in proptest::collection::vec(any::<u8>(), 64)) {
        let e = SubmissionEntry::from_bytes(&bytes).unwrap();
        prop_assert_eq!(e.to_bytes().to_vec(), bytes);
    }

    #[test]
    fn any_status_fits_a_completion(raw in any::<u16>(), phase in any::<bool>()) {
        let status = Status::from_bits(raw);
        let c = CompletionEntry::default().with_status(status).with_phase(phase);
        prop_assert_eq!(c.status(), status);
        prop_assert_eq!(c.phase(), phase);
        prop_assert_eq!(status.into_bits(), raw & 0x7FFF);
    }

    #[test]
    fn builders_check_instead_of_panicking(a in any::<u32>(), b in any::<u32>(), n in any::<u16>()) {
        let fits = |x: u32| (1..=65536).contains(&x);
        prop_assert_eq!(SubmissionEntry::create_io_cq(0, 1, a, 0).is_ok(), fits(a));
        prop_assert_eq!(SubmissionEntry::create_io_sq(0, 1, a, 0, 1).is_ok(), fits(a));
        prop_assert_eq!(SubmissionEntry::read_write(NvmOpcode::Read, 0, 1, 0, a, 0, 0).is_ok(), fits(a));
        prop_assert_eq!(SubmissionEntry::set_number_of_queues(0, a, b).is_ok(), fits(a) && fits(b));
        if let Ok(q) = NumberOfQueues::from_counts(a, b) {
            prop_assert_eq!((q.sq_count(), q.cq_count()), (a, b));
        }
        if let Ok(dw10) = QueueDw10::for_create(3, a) {
            prop_assert_eq!(dw10.entries(), a);
        }
        let admin = |x: u16| (1..=4096).contains(&x);
        prop_assert_eq!(Aqa::for_entries(n, n).is_ok(), admin(n));
        prop_assert_eq!(QueueEntrySize::exactly(n as u8).is_ok(), (n as u8) < 16);
    }

    #[test]
    fn text_fields_check_instead_of_panicking(text in ".{0,30}") {
        let field = AsciiString::<20>::new("SN", &text);
        let printable = text.len() <= 20 && text.chars().all(|c| c.is_ascii_graphic() || c == ' ');
        prop_assert_eq!(field.is_ok(), printable);
        if let Ok(f) = field {
            prop_assert_eq!(f.to_text(), text.trim_end());
        }
    }

    #[test]
    fn register_fields_keep_the_other_bits(raw in any::<u32>(), shn in 0u8..4) {
        let cc = Cc::from_bits(raw).with_shutdown(ShutdownNotification(shn));
        prop_assert_eq!(cc.shutdown(), ShutdownNotification(shn));
        prop_assert_eq!(cc.into_bits() & !(0b11 << 14), raw & !(0b11 << 14));
        prop_assert!(Cc::from_bits(raw).with_shutdown_checked(ShutdownNotification(shn + 4)).is_err());
        let csts = Csts::from_bits(raw);
        prop_assert_eq!(csts.shutdown_status().0, ((raw >> 2) & 0b11) as u8);
    }
}
