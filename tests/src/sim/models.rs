//! Device models of a simulated machine: what each simulated function is,
//! outside the driver protocol.
//!
//! A machine description names, per function, a model file (`model = ...`);
//! pcid's simulated bus hands its absolute path to the function's driver in
//! [`PCID_SIM_MODEL`], and the driver (a test build) reads it. Every model is
//! one typed value written with `toml` by [`write_model`] and read back with
//! `toml` by [`read_model`]; for NVMe the value is `nvme_sim::SimConfig`
//! (read with its own checks by `nvmed-test`), for the example drivers the
//! types below.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use pcid_interface::PCID_SIM_MODEL;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `legacyd`'s device: its one-phase shutdown takes `shutdown_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegacyModel {
    /// Time the device's shutdown takes.
    pub shutdown_ms: u64,
}

impl Default for LegacyModel {
    fn default() -> Self {
        Self { shutdown_ms: 50 }
    }
}

/// `faultyd`'s device: a two-phase shutdown taking `latency_ms`, and the
/// way the driver misbehaves, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultyModel {
    /// Time the device's shutdown takes (also the budget faultyd announces).
    pub latency_ms: u64,
    /// The misbehaviour, if any.
    pub misbehave: Option<Misbehave>,
}

impl Default for FaultyModel {
    fn default() -> Self {
        Self {
            latency_ms: 100,
            misbehave: None,
        }
    }
}

/// How `faultyd` misbehaves (see its documentation for each one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Misbehave {
    /// Never answers `Begin`.
    IgnoresBegin,
    /// Answers `Begin`, never answers `Finish`.
    IgnoresFinish,
    /// Exits (status 3) on `Begin`.
    ExitsInBegin,
    /// Exits (status 3) on `Finish`.
    ExitsInFinish,
    /// Answers `Begin` with bytes that are not a frame.
    SendsGarbage,
    /// Is killed by `SIGKILL` on `Begin`.
    KilledInBegin,
    /// Is killed by `SIGKILL` on `Finish`.
    KilledInFinish,
    /// Exits (status 3) right after `Ready`.
    ExitsBeforeShutdown,
    /// Is killed by `SIGKILL` right after `Ready`.
    KilledBeforeShutdown,
    /// Panics on `Begin`.
    PanicsInBegin,
    /// Answers `Begin` with half a frame, then closes its channel.
    SendsTruncatedFrame,
    /// Answers `Begin` with a header stating a 1 MiB payload.
    SendsOversizeLength,
    /// Answers `Begin` with frame version 9.
    SendsUnknownVersion,
    /// Answers `Begin` with message type `0x7f`.
    SendsUnknownType,
    /// Answers `Begin` with two `BeginAck`s.
    SendsDuplicateAck,
    /// Answers `Begin` with a `FinishAck`.
    SendsOutOfPhaseAck,
    /// Answers `Begin` with a sequence number 1000 past the right one.
    SendsWrongSeq,
    /// Says `Hello` again right after `Ready`.
    SendsSecondHello,
    /// Waits in `Begin` until its device is done.
    WaitsInBegin,
    /// Behaves, but prints a line on standard output after `Ready`.
    PrintsToStdout,
}

/// A name that is not a [`Misbehave`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown misbehaviour `{0}`")]
pub struct UnknownMisbehave(pub String);

impl FromStr for Misbehave {
    type Err = UnknownMisbehave;
    /// The kebab-case name, as in a model file (`ignores-finish`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
            .map_err(|_| UnknownMisbehave(s.to_string()))
    }
}

/// `pcid-test-driver`'s device (pcid's process tests): the budget its
/// `BeginAck` announces and how long its finish takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestDriverModel {
    /// Budget announced in `BeginAck`.
    pub budget_ms: u64,
    /// Time the finish phase takes (bounded by the deadline).
    pub finish_ms: u64,
}

/// Error reading or writing a device model file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file cannot be read or written.
    #[error("device model {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file's TOML does not describe this kind of device.
    #[error("device model {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml (or the model's own checks) reported.
        message: String,
    },
    /// The value cannot be written as TOML.
    #[error("device model {path}: cannot write as TOML: {source}")]
    Serialize {
        /// The file.
        path: PathBuf,
        /// What toml reported.
        source: toml::ser::Error,
    },
}

/// The model file pcid's simulated bus named for this driver, and its text;
/// `None` when pcid named none (a function without a model, or a real bus).
pub fn read_model_text() -> Result<Option<(PathBuf, String)>, ModelError> {
    let Some(path) = std::env::var_os(PCID_SIM_MODEL).map(PathBuf::from) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(Some((path, text)))
}

/// The model pcid's simulated bus named for this driver, parsed as `T`;
/// `None` when pcid named none.
pub fn read_model<T: DeserializeOwned>() -> Result<Option<T>, ModelError> {
    let Some((path, text)) = read_model_text()? else {
        return Ok(None);
    };
    parse_model(&path, &text).map(Some)
}

/// `text` (read from `path`) parsed as `T`.
pub fn parse_model<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ModelError> {
    toml::from_str(text).map_err(|e| ModelError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

/// Writes `model` to `path` as TOML.
pub fn write_model<T: Serialize>(path: &Path, model: &T) -> Result<(), ModelError> {
    let text = toml::to_string(model).map_err(|source| ModelError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        let faulty = FaultyModel {
            latency_ms: 7,
            misbehave: Some(Misbehave::SendsOutOfPhaseAck),
        };
        write_model(&p, &faulty).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("misbehave = \"sends-out-of-phase-ack\""),
            "{text}"
        );
        assert_eq!(parse_model::<FaultyModel>(&p, &text).unwrap(), faulty);
        let plain = FaultyModel::default();
        write_model(&p, &plain).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(parse_model::<FaultyModel>(&p, &text).unwrap(), plain);
    }

    #[test]
    fn a_model_of_the_wrong_kind_is_an_error_naming_the_file() {
        let p = Path::new("/m/a.toml");
        let e = parse_model::<LegacyModel>(p, "latency_ms = 3\n").unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("device model /m/a.toml:"), "{e}");
        assert!(e.contains("unknown field `latency_ms`"), "{e}");
        let e = parse_model::<FaultyModel>(p, "misbehave = \"dances\"\n").unwrap_err();
        assert!(e.to_string().contains("dances"), "{e}");
    }

    #[test]
    fn misbehaviour_names_parse() {
        assert_eq!(
            "ignores-finish".parse::<Misbehave>(),
            Ok(Misbehave::IgnoresFinish)
        );
        assert_eq!(
            "dances".parse::<Misbehave>(),
            Err(UnknownMisbehave("dances".into()))
        );
    }
}
