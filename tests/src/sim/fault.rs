//! `--fault INDEX:KIND`: injecting a fault into one device of a generated machine.
//!
//! Controller faults are faults of the simulated NVMe controller
//! (`nvme_sim::Fault`), driven by the real `nvmed`. Driver faults replace the
//! device at INDEX by a `faultyd` device with the same shutdown latency that
//! misbehaves in the named way (nvmed itself always behaves).

use std::fmt;
use std::str::FromStr;

use super::machine::{DeviceSpec, MachineSpec};

/// Every fault kind, with what it does.
pub const KINDS: [(&str, &str); 21] = [
    (
        "shutdown-never-completes",
        "controller: CSTS.SHST never reaches 10b",
    ),
    (
        "fatal-status",
        "controller: CSTS.CFS set when shutdown is requested",
    ),
    (
        "surprise-removal",
        "controller: registers read all-ones from the shutdown request on",
    ),
    ("driver-ignores-begin", "driver never answers Begin"),
    ("driver-ignores-finish", "driver never answers Finish"),
    ("driver-exits-in-begin", "driver process exits on Begin"),
    ("driver-exits-in-finish", "driver process exits on Finish"),
    (
        "driver-sends-garbage",
        "driver answers Begin with bytes that are not a frame",
    ),
    (
        "driver-killed-in-begin",
        "driver process is killed (SIGKILL) on Begin",
    ),
    (
        "driver-killed-in-finish",
        "driver process is killed (SIGKILL) on Finish",
    ),
    (
        "driver-exits-before-shutdown",
        "driver process exits right after it is ready, before shutdown starts",
    ),
    (
        "driver-killed-before-shutdown",
        "driver process is killed (SIGKILL) right after it is ready, before shutdown starts",
    ),
    (
        "driver-panics-in-begin",
        "driver process panics on Begin (exit status 101)",
    ),
    (
        "driver-sends-truncated-frame",
        "driver answers Begin with half a frame and closes its end of the channel",
    ),
    (
        "driver-sends-oversize-length",
        "driver answers Begin with a frame header stating a 1 MiB payload",
    ),
    (
        "driver-sends-unknown-version",
        "driver answers Begin with a frame of an unknown format version",
    ),
    (
        "driver-sends-unknown-type",
        "driver answers Begin with a frame of an unknown message type",
    ),
    (
        "driver-sends-duplicate-ack",
        "driver answers Begin with two BeginAcks",
    ),
    (
        "driver-sends-out-of-phase-ack",
        "driver answers Begin with a FinishAck",
    ),
    (
        "driver-sends-wrong-seq",
        "driver answers Begin with a BeginAck of a wrong sequence number",
    ),
    (
        "driver-sends-second-hello",
        "driver says Hello again after Ready (a live driver breaking the protocol)",
    ),
];

/// A parsed `INDEX:KIND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpec {
    /// Position of the device in the machine.
    pub index: usize,
    /// One of [`KINDS`].
    pub kind: String,
}

/// Error in a `--fault` value or its application.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// Not `INDEX:KIND`.
    #[error("--fault {0}: expected INDEX:KIND, e.g. 3:shutdown-never-completes")]
    Syntax(String),
    /// Unknown kind.
    #[error("--fault {given}: unknown kind `{kind}` (known: {known})")]
    UnknownKind {
        /// The whole value.
        given: String,
        /// The kind.
        kind: String,
        /// Known kinds.
        known: String,
    },
    /// INDEX is past the last device.
    #[error("--fault {index}:{kind}: the machine has only {len} devices (0..={last})", last = .len.saturating_sub(1))]
    NoSuchDevice {
        /// The index.
        index: usize,
        /// The kind.
        kind: String,
        /// Number of devices.
        len: usize,
    },
    /// A controller fault on a device that is not an NVMe controller.
    #[error("--fault {index}:{kind}: device {index} is not an NVMe controller")]
    NotNvme {
        /// The index.
        index: usize,
        /// The kind.
        kind: String,
    },
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.index, self.kind)
    }
}

impl FromStr for FaultSpec {
    type Err = FaultError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, kind) = s
            .split_once(':')
            .ok_or_else(|| FaultError::Syntax(s.to_string()))?;
        let index = i.parse().map_err(|_| FaultError::Syntax(s.to_string()))?;
        if !KINDS.iter().any(|(k, _)| *k == kind) {
            return Err(FaultError::UnknownKind {
                given: s.to_string(),
                kind: kind.to_string(),
                known: KINDS.map(|(k, _)| k).join(", "),
            });
        }
        Ok(Self {
            index,
            kind: kind.to_string(),
        })
    }
}

impl FaultSpec {
    /// Applies the fault to `machine`.
    pub fn apply(&self, machine: &mut MachineSpec) -> Result<(), FaultError> {
        let len = machine.devices.len();
        let device =
            machine
                .devices
                .get_mut(self.index)
                .ok_or_else(|| FaultError::NoSuchDevice {
                    index: self.index,
                    kind: self.kind.clone(),
                    len,
                })?;
        let latency_ms = match device {
            DeviceSpec::Nvme(n) => n.shutdown_latency_ms,
            DeviceSpec::Faulty { latency_ms, .. } => *latency_ms,
            _ => 100,
        };
        let unknown = || FaultError::UnknownKind {
            given: self.to_string(),
            kind: self.kind.clone(),
            known: KINDS.map(|(k, _)| k).join(", "),
        };
        if let Some(misbehave) = self.kind.strip_prefix("driver-") {
            *device = DeviceSpec::Faulty {
                latency_ms,
                misbehave: Some(misbehave.parse().map_err(|_| unknown())?),
            };
            return Ok(());
        }
        let fault: nvme_sim::Fault = self.kind.parse().map_err(|_| unknown())?;
        match device {
            DeviceSpec::Nvme(n) => {
                n.faults.push(fault);
                Ok(())
            }
            _ => Err(FaultError::NotNvme {
                index: self.index,
                kind: self.kind.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_a_typed_controller_fault_or_driver_misbehaviour() {
        for (kind, _) in KINDS {
            let mut m = MachineSpec::nvme(1, 10, None);
            format!("0:{kind}")
                .parse::<FaultSpec>()
                .unwrap()
                .apply(&mut m)
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    }

    #[test]
    fn parse_and_apply() {
        let mut m = MachineSpec::nvme(3, 200, None);
        "1:fatal-status"
            .parse::<FaultSpec>()
            .unwrap()
            .apply(&mut m)
            .unwrap();
        "2:driver-ignores-finish"
            .parse::<FaultSpec>()
            .unwrap()
            .apply(&mut m)
            .unwrap();
        match &m.devices[1] {
            DeviceSpec::Nvme(n) => assert_eq!(n.faults, vec![nvme_sim::Fault::FatalStatus]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            m.devices[2],
            DeviceSpec::Faulty {
                latency_ms: 200,
                misbehave: Some(crate::sim::models::Misbehave::IgnoresFinish)
            }
        );
        let err = "2:fatal-status".parse::<FaultSpec>().unwrap().apply(&mut m);
        assert!(matches!(err, Err(FaultError::NotNvme { .. })));
        let err = "3:fatal-status".parse::<FaultSpec>().unwrap().apply(&mut m);
        assert!(matches!(err, Err(FaultError::NoSuchDevice { len: 3, .. })));
        assert!(matches!(
            "x:fatal-status".parse::<FaultSpec>(),
            Err(FaultError::Syntax(_))
        ));
        assert!(matches!(
            "0:melts".parse::<FaultSpec>(),
            Err(FaultError::UnknownKind { .. })
        ));
    }
}
