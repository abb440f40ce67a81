//! Framing and encoding of [`crate::protocol`] messages. See PROTOCOL.md.
