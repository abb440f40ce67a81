//! Configuration of one simulated controller: the device model file a
//! simulated machine description names for an NVMe function (`model = ...`;
//! pcid hands its path to the driver's test build in `PCID_SIM_MODEL`). The
//! file is this type written by `toml` ([`SimConfig::to_toml_string`]) and
//! read back by [`SimConfig::from_toml_str`].
//!
//! Every key is optional; unknown keys are rejected so that a typo in a model
//! file is an error rather than a silently ignored setting.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An injected fault. In TOML these are written as kebab-case strings, e.g.
/// `faults = ["shutdown-never-completes"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// A shutdown request (CC.SHN = 01b or 10b) is accepted and CSTS.SHST reads
    /// 01b ("occurring") forever; it never reaches 10b.
    ShutdownNeverCompletes,
    /// A shutdown request sets CSTS.CFS (controller fatal status); CSTS.SHST
    /// stays 01b. A controller reset (CC.EN 1→0) clears CFS.
    FatalStatus,
    /// From the moment a shutdown is requested the device is gone: every
    /// register reads all-ones and writes are dropped (see also
    /// [`crate::SimController::surprise_remove`]).
    SurpriseRemoval,
    /// After CC.EN 0→1, CSTS.RDY takes longer than CAP.TO allows
    /// (CAP.TO × 500 ms + 1 s) to become 1.
    SlowReady,
    /// Commands on I/O submission queues are fetched (the SQ head advances) but
    /// never completed. Admin commands are unaffected.
    DropsCommands,
}

impl Fault {
    /// Every fault, in declaration order.
    pub const ALL: [Fault; 5] = [
        Fault::ShutdownNeverCompletes,
        Fault::FatalStatus,
        Fault::SurpriseRemoval,
        Fault::SlowReady,
        Fault::DropsCommands,
    ];

    /// The kebab-case name used in TOML and on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ShutdownNeverCompletes => "shutdown-never-completes",
            Fault::FatalStatus => "fatal-status",
            Fault::SurpriseRemoval => "surprise-removal",
            Fault::SlowReady => "slow-ready",
            Fault::DropsCommands => "drops-commands",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown fault name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault `{0}` (known: shutdown-never-completes, fatal-status, surprise-removal, slow-ready, drops-commands)")]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFault(s.to_string()))
    }
}

/// State of the controller when the model is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartState {
    /// As firmware (e.g. SeaBIOS) leaves QEMU's controllers: CC.EN = 1,
    /// CSTS.RDY = 1, an admin queue pair and I/O queue pair 1 in memory the
    /// driver does not own, with a few commands already consumed. A driver must
    /// reset the controller (CC.EN 1→0) before programming it.
    #[default]
    Enabled,
    /// Power-on reset state: CC = 0, CSTS.RDY = 0.
    Disabled,
}

/// How [`crate::SimDma`] assigns bus addresses to the pages of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmaLayout {
    /// Pages of one buffer get non-adjacent bus addresses, in descending order,
    /// with an unmapped page between any two mapped pages — like locked user
    /// pages on Linux. A device access that runs off the end of a page faults.
    #[default]
    Scattered,
    /// Pages of one buffer get consecutive bus addresses (buffers are still
    /// separated by an unmapped guard page).
    Contiguous,
}

/// Largest `read_latency_ms` / `write_latency_ms` (one hour).
pub const MAX_COMMAND_LATENCY_MS: u64 = 3_600_000;

/// Configuration of one simulated NVMe controller.
///
/// Keys (all optional) and defaults:
///
/// | key | default | meaning |
/// |---|---|---|
/// | `serial` | `"SIM0000"` | Identify Controller SN (≤ 20 ASCII chars) |
/// | `model` | `"nvme_sim simulated controller"` | Identify Controller MN (≤ 40) |
/// | `firmware` | `"1.0"` | Identify Controller FR (≤ 8) |
/// | `rtd3e_us` | `1000000` | Identify Controller RTD3E, µs |
/// | `shutdown_latency_ms` | `10` | time a normal shutdown (SHN=01b) takes |
/// | `abrupt_latency_ms` | `0` | time an abrupt shutdown (SHN=10b) takes |
/// | `namespace_blocks` | `65536` | size of namespace 1 in logical blocks |
/// | `block_size` | `512` | logical block size: 512 or 4096 |
/// | `backing_file` | none | file holding the namespace, created and extended as needed (relative to the working directory); in-memory if absent |
/// | `volatile_write_cache` | `false` | Identify VWC; writes stay in a cache until Flush / normal shutdown |
/// | `abrupt_flushes_cache` | `false` | whether completing an abrupt shutdown writes the cache back |
/// | `mdts` | `5` | Identify MDTS (max transfer 2^mdts × 4 KiB; 0 = no limit) |
/// | `cap_to` | `15` | CAP.TO, in 500 ms units (1..=255) |
/// | `mqes` | `1023` | CAP.MQES, 0-based maximum queue entries (1..=65535) |
/// | `doorbell_stride` | `0` | CAP.DSTRD: doorbells are `4 << dstrd` bytes apart (0..=8) |
/// | `max_io_queues` | `16` | I/O SQs and CQs the controller can allocate (1..=1024) |
/// | `ready_latency_ms` | `1` | time from CC.EN 0→1 to CSTS.RDY = 1 |
/// | `reset_latency_ms` | `0` | time from CC.EN 1→0 to CSTS.RDY = 0 |
/// | `read_latency_ms` | `0` | a Read is fetched at once but transfers its data and completes this long later (0: at once) |
/// | `write_latency_ms` | `0` | the same for a Write |
/// | `start_state` | `"enabled"` | `"enabled"` (as firmware leaves it) or `"disabled"` |
/// | `dma_layout` | `"scattered"` | `"scattered"` or `"contiguous"` bus addresses |
/// | `faults` | `[]` | list of [`Fault`] names |
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Serial number (Identify Controller bytes 4–23).
    pub serial: String,
    /// Model number (Identify Controller bytes 24–63).
    pub model: String,
    /// Firmware revision (Identify Controller bytes 64–71).
    pub firmware: String,
    /// RTD3 Entry Latency reported in Identify Controller (bytes 88–91), µs.
    pub rtd3e_us: u32,
    /// Real time a normal shutdown takes: CSTS.SHST reads 01b for this long
    /// after CC.SHN = 01b, then 10b.
    pub shutdown_latency_ms: u64,
    /// Real time an abrupt shutdown (CC.SHN = 10b) takes.
    pub abrupt_latency_ms: u64,
    /// Namespace 1 size in logical blocks.
    pub namespace_blocks: u64,
    /// Logical block size in bytes (512 or 4096).
    pub block_size: u32,
    /// Backing file; created (and extended to the namespace size) if needed.
    pub backing_file: Option<PathBuf>,
    /// Whether the controller has a volatile write cache (Identify VWC bit 0).
    pub volatile_write_cache: bool,
    /// Whether an abrupt shutdown writes the volatile cache back when it
    /// completes (default: it is discarded, the worst case the spec allows).
    pub abrupt_flushes_cache: bool,
    /// Maximum Data Transfer Size as a power of two of 4 KiB pages (0 = none).
    pub mdts: u8,
    /// CAP.TO, worst-case time to RDY transitions, in 500 ms units.
    pub cap_to: u8,
    /// CAP.MQES, maximum queue entries supported, 0-based.
    pub mqes: u16,
    /// CAP.DSTRD, doorbell stride exponent.
    pub doorbell_stride: u8,
    /// Number of I/O submission and completion queues the controller supports.
    pub max_io_queues: u16,
    /// Time from CC.EN 0→1 until CSTS.RDY = 1.
    pub ready_latency_ms: u64,
    /// Time from CC.EN 1→0 until CSTS.RDY = 0.
    pub reset_latency_ms: u64,
    /// Time from fetching a Read to its data transfer and completion (0: at
    /// once). A driver that gives up earlier sees the completion late.
    pub read_latency_ms: u64,
    /// Time from fetching a Write to its data transfer and completion.
    pub write_latency_ms: u64,
    /// State of the controller when the model is created.
    pub start_state: StartState,
    /// Bus address layout of DMA buffers.
    pub dma_layout: DmaLayout,
    /// Injected faults.
    pub faults: Vec<Fault>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            serial: "SIM0000".to_string(),
            model: "nvme_sim simulated controller".to_string(),
            firmware: "1.0".to_string(),
            rtd3e_us: 1_000_000,
            shutdown_latency_ms: 10,
            abrupt_latency_ms: 0,
            namespace_blocks: 65536,
            block_size: 512,
            backing_file: None,
            volatile_write_cache: false,
            abrupt_flushes_cache: false,
            mdts: 5,
            cap_to: 15,
            mqes: 1023,
            doorbell_stride: 0,
            max_io_queues: 16,
            ready_latency_ms: 1,
            reset_latency_ms: 0,
            read_latency_ms: 0,
            write_latency_ms: 0,
            start_state: StartState::Enabled,
            dma_layout: DmaLayout::Scattered,
            faults: Vec::new(),
        }
    }
}

/// Error in a simulated controller's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML text does not parse or does not match the schema.
    #[error("{}", describe_toml(.line, .column, .key, .message))]
    Toml {
        /// 1-based line of the offending text, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// The key involved, when known.
        key: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// A value parses but is out of range or inconsistent.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why the value is not accepted.
        reason: String,
    },
}

fn describe_toml(
    line: &Option<usize>,
    column: &Option<usize>,
    key: &Option<String>,
    message: &str,
) -> String {
    let mut s = String::new();
    if let Some(l) = line {
        s.push_str(&format!("line {l}"));
        if let Some(c) = column {
            s.push_str(&format!(", column {c}"));
        }
        s.push_str(": ");
    }
    if let Some(k) = key {
        s.push_str(&format!("key `{k}`: "));
    }
    s.push_str(message.trim_end());
    s
}

impl SimConfig {
    /// Parses and validates a configuration from TOML text (a device model
    /// file).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: SimConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as a device model file: TOML written by `toml`,
    /// which [`SimConfig::from_toml_str`] reads back unchanged.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Toml {
            line: None,
            column: None,
            key: None,
            message: format!("cannot write the configuration as TOML: {e}"),
        })
    }

    /// Whether `fault` is injected.
    pub fn has_fault(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }

    /// Namespace size in bytes.
    pub fn namespace_bytes(&self) -> u64 {
        self.namespace_blocks
            .saturating_mul(u64::from(self.block_size))
    }

    /// Checks ranges and consistency of every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        for (key, value, max) in [
            ("serial", &self.serial, 20usize),
            ("model", &self.model, 40),
            ("firmware", &self.firmware, 8),
        ] {
            if value.len() > max {
                return invalid(key, format!("longer than {max} bytes"));
            }
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return invalid(key, "must be printable ASCII");
            }
        }
        if self.block_size != 512 && self.block_size != 4096 {
            return invalid(
                "block_size",
                format!("{} is not 512 or 4096", self.block_size),
            );
        }
        if self.namespace_blocks == 0 {
            return invalid("namespace_blocks", "must be at least 1");
        }
        if self.namespace_bytes() > (1u64 << 50) {
            return invalid("namespace_blocks", "namespace larger than 1 PiB");
        }
        if self.cap_to == 0 {
            return invalid("cap_to", "must be at least 1 (500 ms)");
        }
        if self.mqes == 0 {
            return invalid("mqes", "must be at least 1 (queues of 2 entries)");
        }
        if self.doorbell_stride > 8 {
            return invalid("doorbell_stride", "must be 0..=8");
        }
        if self.max_io_queues == 0 || self.max_io_queues > 1024 {
            return invalid("max_io_queues", "must be 1..=1024");
        }
        if self.mdts > 16 {
            return invalid("mdts", "must be 0..=16");
        }
        for (key, value) in [
            ("read_latency_ms", self.read_latency_ms),
            ("write_latency_ms", self.write_latency_ms),
        ] {
            if value > MAX_COMMAND_LATENCY_MS {
                return invalid(key, format!("must be at most {MAX_COMMAND_LATENCY_MS}"));
            }
        }
        Ok(())
    }
}

/// Converts a TOML error into [`ConfigError::Toml`] with line, column and key.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (mut line, mut column, mut key) = (None, None, None);
    if let Some(span) = e.span() {
        let start = span.start.min(text.len());
        let before = &text[..start];
        let l = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        line = Some(l);
        column = Some(before[line_start..].chars().count() + 1);
        let line_text = text[line_start..].lines().next().unwrap_or("");
        if let Some((k, _)) = line_text.split_once('=') {
            let k = k.trim().trim_matches('"');
            if !k.is_empty() && !k.starts_with('[') && !k.starts_with('#') {
                key = Some(k.to_string());
            }
        }
    }
    ConfigError::Toml {
        line,
        column,
        key,
        message: e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_configuration_reads_back_unchanged() {
        let c = SimConfig {
            serial: "SIM \"quoted\" \\".into(),
            backing_file: Some(PathBuf::from("/tmp/a \"b\"\n.img")),
            faults: vec![Fault::FatalStatus, Fault::DropsCommands],
            start_state: StartState::Disabled,
            dma_layout: DmaLayout::Contiguous,
            ..SimConfig::default()
        };
        let text = c.to_toml_string().unwrap();
        assert!(
            text.contains("faults = [\"fatal-status\", \"drops-commands\"]"),
            "{text}"
        );
        assert_eq!(SimConfig::from_toml_str(&text).unwrap(), c);
        // No backing file: the key is left out, and reads back as none.
        let d = SimConfig::default();
        let text = d.to_toml_string().unwrap();
        assert!(!text.contains("backing_file"), "{text}");
        assert_eq!(SimConfig::from_toml_str(&text).unwrap(), d);
    }

    #[test]
    fn empty_gives_defaults() {
        assert_eq!(SimConfig::from_toml_str("").unwrap(), SimConfig::default());
    }

    #[test]
    fn example_table_parses() {
        let c = SimConfig::from_toml_str(
            r#"
serial = "SIM0000"
shutdown_latency_ms = 4500
rtd3e_us = 4500000
volatile_write_cache = true
backing_file = "/tmp/x/nvme0.img"
faults = ["fatal-status", "slow-ready"]
start_state = "disabled"
"#,
        )
        .unwrap();
        assert_eq!(c.shutdown_latency_ms, 4500);
        assert_eq!(c.rtd3e_us, 4_500_000);
        assert!(c.volatile_write_cache);
        assert_eq!(
            c.backing_file.as_deref(),
            Some(std::path::Path::new("/tmp/x/nvme0.img"))
        );
        assert_eq!(c.faults, vec![Fault::FatalStatus, Fault::SlowReady]);
        assert_eq!(c.start_state, StartState::Disabled);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = SimConfig::from_toml_str("serial = \"A\"\nshutdown_latncy_ms = 5\n").unwrap_err();
        match &err {
            ConfigError::Toml {
                line, key, message, ..
            } => {
                assert_eq!(*line, Some(2));
                assert_eq!(key.as_deref(), Some("shutdown_latncy_ms"));
                assert!(message.contains("unknown field"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn wrong_type_names_key() {
        let err = SimConfig::from_toml_str("mdts = 3\ncap_to = \"x\"\n").unwrap_err();
        match err {
            ConfigError::Toml { line, key, .. } => {
                assert_eq!(line, Some(2));
                assert_eq!(key.as_deref(), Some("cap_to"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = SimConfig::from_toml_str("serial = \"A\"\n\nmdts = \n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Toml { line: Some(3), .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("line 3"), "{err}");
    }

    #[test]
    fn unknown_fault_is_an_error() {
        let err = SimConfig::from_toml_str("faults = [\"explodes\"]").unwrap_err();
        assert!(
            matches!(err, ConfigError::Toml { line: Some(1), .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("explodes"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for (text, key) in [
            ("block_size = 1000", "block_size"),
            ("namespace_blocks = 0", "namespace_blocks"),
            ("cap_to = 0", "cap_to"),
            ("doorbell_stride = 9", "doorbell_stride"),
            ("serial = \"012345678901234567890\"", "serial"),
            ("max_io_queues = 0", "max_io_queues"),
            ("read_latency_ms = 3600001", "read_latency_ms"),
        ] {
            match SimConfig::from_toml_str(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>().unwrap(), f);
        }
        assert!("nope".parse::<Fault>().is_err());
    }
}
