//! Decoding arbitrary bytes never panics and round-trips where it should.

use nvme_spec::cmd::{CompletionEntry, SubmissionEntry};
use nvme_spec::identify::{parse_namespace_list, IdentifyController, IdentifyNamespace};
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = CompletionEntry::from_bytes(&bytes);
        let _ = SubmissionEntry::from_bytes(&bytes);
        if let Ok(id) = IdentifyController::parse(&bytes) {
            let _ = id.max_transfer_bytes(4096);
        }
        if let Ok(ns) = IdentifyNamespace::parse(&bytes) {
            let _ = ns.block_size();
        }
        let _ = parse_namespace_list(&bytes);
    }

    #[test]
    fn completion_entries_round_trip(bytes in proptest::array::uniform16(any::<u8>())) {
        let c = CompletionEntry::from_bytes(&bytes).unwrap();
        prop_assert_eq!(c.to_bytes(), bytes);
    }

    #[test]
    fn submission_entries_round_trip(bytes in proptest::collection::vec(any::<u8>(), 64)) {
        let e = SubmissionEntry::from_bytes(&bytes).unwrap();
        prop_assert_eq!(e.to_bytes().to_vec(), bytes);
    }
}
