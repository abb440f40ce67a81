//! pcid's control connection as a [`ControlPort`].
//!
//! Sending never waits: a message joins the connection's send queue
//! ([`pcid_interface::transport::Channel::enqueue`]), and the queue is
//! written when the loop next receives — as one write for everything the
//! scheduler decided in one step (256 `Begin`s are one write, and pcid
//! reads them in a few reads), and without the loop ever blocking on pcid
//! while a deadline runs (`recv` keeps writing what is queued while it
//! waits for an answer).

use std::path::Path;
use std::time::Duration;

use pcid_interface::protocol::ControlMessage;
use pcid_interface::transport::{ControlChannel, ControlClient, ControlError, TransportError};
use shutdownd::{ControlPort, PortError};

/// The connected control channel.
pub struct Port(ControlChannel);

/// Connects to pcid's control socket at `path`.
pub fn connect(path: &Path) -> Result<Port, ControlError> {
    ControlClient::connect(path).map(Port)
}

fn port_error(e: TransportError) -> PortError {
    match e {
        TransportError::Closed => PortError::Closed,
        other => PortError::Other(other.to_string()),
    }
}

impl ControlPort for Port {
    fn send(&mut self, msg: &ControlMessage) -> Result<(), PortError> {
        self.0.enqueue(msg).map_err(port_error)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<ControlMessage>, PortError> {
        match self.0.recv(Some(timeout)) {
            Ok(m) => Ok(Some(m)),
            Err(TransportError::Timeout(_)) => Ok(None),
            // A frame that could not be decoded but did not break the stream:
            // log it and keep going.
            Err(e @ TransportError::Malformed { .. }) if !e.is_fatal() => {
                log::warn!("ignoring a malformed message from pcid: {e}");
                Ok(None)
            }
            Err(e) => Err(port_error(e)),
        }
    }
}
