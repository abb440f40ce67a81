//! Fuzz target for the protocol decoder (`pcid_interface::wire`).
//!
//! The input is treated as a byte stream of frames, as a channel receives it:
//! each frame is decoded as a driver message and as a control message. The
//! decoder must never panic; whatever decodes must re-encode to the same
//! bytes (the header's sequence field of messages without one reads as 0).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcid_interface::protocol::{ControlMessage, DriverMessage};
use pcid_interface::wire::{FrameHeader, WireMessage, HEADER_LEN};

fn check<M: WireMessage + std::fmt::Debug>(frame: &[u8]) {
    if let Ok(msg) = M::decode(frame) {
        let again = msg.encode().expect("a decoded message re-encodes");
        assert_eq!(again.len(), frame.len(), "{msg:?}");
        assert_eq!(again[..8], frame[..8], "{msg:?}");
        assert_eq!(again[12..], frame[12..], "{msg:?}");
        assert_eq!(
            u32::from_le_bytes([again[8], again[9], again[10], again[11]]),
            msg.seq()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // Whole input as one frame.
    check::<DriverMessage>(data);
    check::<ControlMessage>(data);

    // Input as a stream of frames.
    let mut rest = data;
    while rest.len() >= HEADER_LEN {
        let Ok(header) = FrameHeader::parse(rest) else {
            break;
        };
        let Some(frame) = rest.get(..header.frame_len()) else {
            break;
        };
        check::<DriverMessage>(frame);
        check::<ControlMessage>(frame);
        rest = &rest[header.frame_len()..];
    }
});
