//! The OS-free heart of pcid's Redox runtime: scheme events in, relay
//! decisions out.
//!
//! [`Engine`] owns the scheme state and the [`Relay`]. The runtime hands it the
//! events its scheme requests produced; the engine turns them into relay
//! inputs and carries out the relay's outputs on the scheme state (queue a
//! frame, close a handle), asking its [`Host`] to post `EVENT_READ` on a
//! handle — the one thing that needs the OS. The unit tests implement
//! [`Host`] with a recorder and run whole conversations of Redox drivers,
//! this project's drivers, pcid-spawner and shutdownd through the scheme on
//! any host.
//!
//! On Redox, pcid starts no driver: Redox's pcid-spawner opens a function's
//! channel, asks for its configuration and hands the channel to the driver
//! it starts. So a driver becomes known to the relay when its channel is
//! opened ([`Relay::add_opened`]): as a driver without shutdown support,
//! listed as [`NO_HELLO_NAME`], until it says `Hello`. A channel that closes
//! without `Hello` (a Redox driver that exited, or a function pcid-spawner
//! found no driver for) leaves the device list; a driver of this protocol
//! whose channel closes is reported dead, as on Linux.

use std::collections::BTreeMap;
use std::time::Instant;

use pcid_interface::function::PciAddress;
use pcid_interface::protocol::DeviceInfo;

use super::enumerate::Found;
use super::state::{function_name, Event, SchemeState};
use crate::relay::{DriverId, Input, Output, Relay, RelayConfig};

/// Driver name listed for a channel whose driver has not said `Hello`
/// (a driver speaking only Redox's driver interface).
pub const NO_HELLO_NAME: &str = "redox-driver";

/// What the engine needs from the operating system.
pub trait Host {
    /// Post `EVENT_READ` on a scheme handle (pcid queued bytes or closed it).
    fn notify(&mut self, handle: usize);
}

/// Scheme state plus relay; see the module documentation.
#[derive(Debug)]
pub struct Engine {
    /// The scheme's handles and channels.
    pub state: SchemeState,
    relay: Relay,
    ids: BTreeMap<PciAddress, DriverId>,
    /// Participant channels: handle → relay channel, and back.
    participants: BTreeMap<usize, DriverId>,
    participant_handles: BTreeMap<DriverId, usize>,
    exit: bool,
}

fn pid32(pid: usize) -> u32 {
    u32::try_from(pid).unwrap_or(u32::MAX)
}

impl Engine {
    /// An engine serving the enumerated functions.
    pub fn new(found: Vec<Found>, config: RelayConfig) -> Self {
        Self {
            state: SchemeState::new(found),
            relay: Relay::new(config),
            ids: BTreeMap::new(),
            participants: BTreeMap::new(),
            participant_handles: BTreeMap::new(),
            exit: false,
        }
    }

    /// Whether the relay asked pcid to exit.
    pub fn exit_requested(&self) -> bool {
        self.exit
    }

    /// When the relay next needs [`Engine::tick`].
    pub fn next_deadline(&self) -> Option<Instant> {
        self.relay.next_deadline()
    }

    /// The device list as shutdownd sees it.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.relay.devices()
    }

    /// Handles events from scheme requests.
    pub fn dispatch(&mut self, host: &mut dyn Host, events: Vec<Event>, now: Instant) {
        for event in events {
            self.feed(host, event, now);
        }
    }

    /// Lets the relay check its deadlines.
    pub fn tick(&mut self, host: &mut dyn Host, now: Instant) {
        self.step(host, Input::Tick, now);
    }

    fn driver(&self, address: PciAddress) -> Option<DriverId> {
        let id = self.ids.get(&address).copied();
        if id.is_none() {
            log::warn!(
                "{}: activity on a channel the relay does not know",
                function_name(address)
            );
        }
        id
    }

    fn feed(&mut self, host: &mut dyn Host, event: Event, now: Instant) {
        let input = match event {
            Event::Readable { handle } => {
                host.notify(handle);
                return;
            }
            Event::ChannelOpened {
                function,
                handle: _,
                pid,
            } => {
                let address = function.address;
                let (id, out) =
                    self.relay
                        .add_opened(function, NO_HELLO_NAME.to_string(), pid32(pid), now);
                self.ids.insert(address, id);
                self.execute(host, out, now);
                return;
            }
            Event::DriverRequest {
                address,
                pid,
                request,
            } => {
                log::debug!("{}: pid {pid}: {request:?}", function_name(address));
                if let Some(id) = self.driver(address) {
                    if !self.relay.said_hello(id) {
                        // The process using the channel (pcid-spawner first,
                        // then the driver it started).
                        self.relay.set_pid(id, pid32(pid));
                    }
                }
                return;
            }
            Event::DriverMessage {
                address,
                pid,
                message,
            } => {
                let Some(driver) = self.driver(address) else {
                    return;
                };
                if matches!(
                    message,
                    pcid_interface::protocol::DriverMessage::Hello { .. }
                ) {
                    self.relay.set_pid(driver, pid32(pid));
                }
                Input::DriverMessage { driver, message }
            }
            Event::DriverBadFrame { address, error } => match self.driver(address) {
                Some(driver) => Input::DriverBadFrame { driver, error },
                None => return,
            },
            Event::ChannelClosed { address } => {
                let Some(driver) = self.driver(address) else {
                    return;
                };
                if self.relay.said_hello(driver) {
                    Input::DriverChannelClosed { driver }
                } else {
                    log::debug!(
                        "{}: channel closed by a driver that never spoke the shutdown protocol",
                        function_name(address)
                    );
                    self.ids.remove(&address);
                    let out = self.relay.retire(driver);
                    self.execute(host, out, now);
                    return;
                }
            }
            Event::ParticipantOpened { handle, pid } => {
                let id = self.relay.add_participant(pid32(pid), now);
                self.participants.insert(handle, id);
                self.participant_handles.insert(id, handle);
                Input::Tick
            }
            Event::ParticipantMessage {
                handle,
                pid,
                message,
            } => {
                let Some(&driver) = self.participants.get(&handle) else {
                    return;
                };
                if matches!(
                    message,
                    pcid_interface::protocol::DriverMessage::Register { .. }
                ) {
                    self.relay.set_pid(driver, pid32(pid));
                }
                Input::DriverMessage { driver, message }
            }
            Event::ParticipantBadFrame { handle, error } => match self.participants.get(&handle) {
                Some(&driver) => Input::DriverBadFrame { driver, error },
                None => return,
            },
            Event::ParticipantClosed { handle } => {
                let Some(driver) = self.participants.remove(&handle) else {
                    return;
                };
                self.participant_handles.remove(&driver);
                Input::DriverChannelClosed { driver }
            }
            Event::ClientOpened { client } => Input::ClientConnected { client },
            Event::ClientMessage { client, message } => Input::ClientMessage { client, message },
            Event::ClientBadFrame {
                client,
                error,
                fatal,
            } => Input::ClientBadFrame {
                client,
                error,
                fatal,
            },
            Event::ClientClosed { client } => Input::ClientClosed { client },
        };
        self.step(host, input, now);
    }

    fn step(&mut self, host: &mut dyn Host, input: Input, now: Instant) {
        let outputs = self.relay.handle(input, now);
        self.execute(host, outputs, now);
    }

    fn execute(&mut self, host: &mut dyn Host, outputs: Vec<Output>, now: Instant) {
        for output in outputs {
            match output {
                Output::ToDriver { driver, message } if self.relay.is_participant(driver) => {
                    let Some(&handle) = self.participant_handles.get(&driver) else {
                        continue;
                    };
                    match self.state.send_to_participant(handle, &message) {
                        Ok(h) => host.notify(h),
                        Err(e) => {
                            log::error!(
                                "{}: cannot queue a message: {e}",
                                self.relay.label(driver)
                            );
                            if let Some(h) = self.state.close_participant(handle) {
                                host.notify(h);
                            }
                            self.step(host, Input::DriverChannelClosed { driver }, now);
                        }
                    }
                }
                Output::CloseDriver { driver } if self.relay.is_participant(driver) => {
                    if let Some(h) = self
                        .participant_handles
                        .get(&driver)
                        .and_then(|&handle| self.state.close_participant(handle))
                    {
                        host.notify(h);
                    }
                }
                Output::ToDriver { driver, message } => {
                    let Some(address) = self.relay.address(driver) else {
                        continue;
                    };
                    match self.state.send_to_driver(address, &message) {
                        Ok(handle) => host.notify(handle),
                        Err(e) => {
                            log::error!(
                                "{}: cannot queue a message for the driver: {e}",
                                function_name(address)
                            );
                            if let Some(handle) = self.state.close_driver(address) {
                                host.notify(handle);
                            }
                            self.step(host, Input::DriverChannelClosed { driver }, now);
                        }
                    }
                }
                Output::CloseDriver { driver } => {
                    if let Some(handle) = self
                        .relay
                        .address(driver)
                        .and_then(|a| self.state.close_driver(a))
                    {
                        host.notify(handle);
                    }
                }
                Output::ToClient { client, message } => {
                    match self.state.send_to_client(client, &message) {
                        Ok(handle) => host.notify(handle),
                        Err(e) => {
                            log::warn!("control client {client}: {e}; closing it");
                            if let Some(handle) = self.state.close_client(client) {
                                host.notify(handle);
                                self.step(host, Input::ClientClosed { client }, now);
                            }
                        }
                    }
                }
                Output::CloseClient { client } => {
                    if let Some(handle) = self.state.close_client(client) {
                        host.notify(handle);
                    }
                }
                // Readiness was signalled when the scheme was served; drivers
                // are Redox's pcid-spawner's business.
                Output::Ready { .. } => {}
                Output::Exit => self.exit = true,
            }
        }
    }
}

#[cfg(test)]
mod tests;
