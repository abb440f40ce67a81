//! `pcid`: the PCI daemon.
//!
//! * [`bus`] — where functions come from: a simulated machine ([`machine`]) or Linux sysfs;
//! * [`matching`] — Redox-format driver match tables (`pcid.d/*.toml`);
//! * [`location`] — `file:line` positions for configuration errors.

pub mod bus;
pub mod location;
pub mod machine;
pub mod matching;
pub mod relay;
