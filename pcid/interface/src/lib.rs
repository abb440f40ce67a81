//! `pcid_interface`: what a driver process links to talk to `pcid`.
//!
//! * [`function`] — the description of the PCI function a driver was spawned for;
//! * [`protocol`] — the shutdown protocol v1 message types (driver channel) and
//!   the control messages `shutdownd` exchanges with `pcid`;
//! * [`wire`] — framing and encoding of those messages (no OS calls, never panics);
//! * [`transport`] — the OS side: the channel fd named by `PCID_CLIENT_CHANNEL`,
//!   Unix sockets on Linux;
//! * [`driver`] — the helper a driver implements in two methods (`begin`, `finish`);
//! * [`privileges`] — dropping privileges (`setrens` on Redox) and refusing
//!   to open anything afterwards;
//! * [`redox`] — Redox specifics: BARs as `Welcome` carries them, scheme paths, and
//!   (on Redox) daemon start-up and event waiting.
//!
//! The wire format is specified in `pcid/interface/PROTOCOL.md`.

pub mod driver;
pub mod function;
pub mod privileges;
pub mod protocol;
pub mod redox;
pub mod transport;
pub mod wire;

/// Environment variable naming the inherited channel fd (Redox's convention).
pub const PCID_CLIENT_CHANNEL: &str = "PCID_CLIENT_CHANNEL";

/// Environment variable pcid's simulated bus sets for a driver whose function
/// has a device model: the absolute path of the model's description file.
/// Not part of the protocol (`Welcome` says only [`function::FunctionBackend::Simulated`]);
/// what the file holds belongs to the driver's test build and its device model
/// (for NVMe, `nvme_sim::SimConfig` as TOML). pcid never sets it on a real bus.
pub const PCID_SIM_MODEL: &str = "PCID_SIM_MODEL";
