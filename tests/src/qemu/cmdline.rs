//! The guest's configuration, passed as dotted `e2e.*` kernel arguments.
//!
//! The host renders a [`GuestConfig`] into words of the kernel command line
//! (`e2e.mode=full e2e.sequential=1 ...`); the guest's init reads them back
//! from `/proc/cmdline`. Words without the `e2e.` prefix belong to the kernel
//! and are ignored.

use std::time::Duration;

/// pcid announces readiness at the latest this long before init stops waiting.
pub const READY_MARGIN: Duration = Duration::from_secs(10);
/// Time shutdownd has past its own global deadline before init kills it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the guest's init does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// List PCI functions, map BAR0 of every NVMe controller and print its
    /// CAP/VS/CC/CSTS registers, then power off (no pcid, nvmed or shutdownd).
    Probe,
    /// Start pcid (which spawns nvmed per controller), run shutdownd, print
    /// the report, power off.
    Full,
    /// No stack: the kernel's own nvme driver (left enabled by the host)
    /// drives the controllers. Wait until it has every controller live,
    /// write the self-test pattern through each namespace's block device,
    /// then power off: the kernel shuts the controllers down itself, and the
    /// host times that from the kernel log.
    Kernel,
}

impl Mode {
    /// The word on the kernel command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Probe => "probe",
            Mode::Full => "full",
            Mode::Kernel => "kernel",
        }
    }
}

/// Settings the guest reads from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// What to do.
    pub mode: Mode,
    /// Run shutdownd with `--sequential` (one device at a time).
    pub sequential: bool,
    /// Number of NVMe controllers the host attached (pcid must report this many).
    pub controllers: usize,
    /// How long to wait for pcid's readiness signal (pcid is told to announce
    /// readiness, complete or not, [`READY_MARGIN`] earlier).
    pub ready_timeout: Duration,
    /// shutdownd's global deadline (`--deadline-ms`); init kills shutdownd if
    /// it is still running [`SHUTDOWN_GRACE`] after it.
    pub shutdown_timeout: Duration,
    /// `RUST_LOG` value for pcid, nvmed and shutdownd.
    pub log: String,
    /// PCI address of the canary controller, if the host attached one
    /// (`super::canary`).
    pub canary: Option<String>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Full,
            sequential: false,
            controllers: 0,
            ready_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            log: "info".to_string(),
            canary: None,
        }
    }
}

/// A malformed `e2e.*` argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel argument {word:?}: {reason}")]
pub struct CmdlineError {
    /// The offending word.
    pub word: String,
    /// What is wrong with it.
    pub reason: String,
}

impl GuestConfig {
    /// Reads the `e2e.*` words of a kernel command line; other words are ignored,
    /// missing settings keep their defaults.
    pub fn parse(cmdline: &str) -> Result<Self, CmdlineError> {
        let mut config = Self::default();
        for word in cmdline.split_whitespace() {
            let Some(setting) = word.strip_prefix("e2e.") else {
                continue;
            };
            let (key, value) = setting.split_once('=').unwrap_or((setting, "1"));
            let err = |reason: &str| CmdlineError {
                word: word.to_string(),
                reason: reason.to_string(),
            };
            let millis = |v: &str| {
                v.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| err("expected milliseconds"))
            };
            match key {
                "mode" => {
                    config.mode = match value {
                        "probe" => Mode::Probe,
                        "full" => Mode::Full,
                        "kernel" => Mode::Kernel,
                        _ => return Err(err("expected probe, full or kernel")),
                    }
                }
                "sequential" => {
                    config.sequential = match value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(err("expected 0 or 1")),
                    }
                }
                "controllers" => {
                    config.controllers = value.parse().map_err(|_| err("expected a count"))?
                }
                "ready_ms" => config.ready_timeout = millis(value)?,
                "shutdown_ms" => config.shutdown_timeout = millis(value)?,
                "log" => {
                    if value.is_empty() {
                        return Err(err("empty log filter"));
                    }
                    config.log = value.to_string();
                }
                "canary" => {
                    if value
                        .parse::<pcid_interface::function::PciAddress>()
                        .is_err()
                    {
                        return Err(err("expected a PCI address"));
                    }
                    config.canary = Some(value.to_string());
                }
                _ => return Err(err("unknown e2e setting")),
            }
        }
        Ok(config)
    }

    /// Renders the settings as kernel command-line words.
    pub fn to_kernel_args(&self) -> Vec<String> {
        let mut words = vec![
            format!("e2e.mode={}", self.mode.as_str()),
            format!("e2e.sequential={}", u8::from(self.sequential)),
            format!("e2e.controllers={}", self.controllers),
            format!("e2e.ready_ms={}", self.ready_timeout.as_millis()),
            format!("e2e.shutdown_ms={}", self.shutdown_timeout.as_millis()),
            format!("e2e.log={}", self.log),
        ];
        if let Some(a) = &self.canary {
            words.push(format!("e2e.canary={a}"));
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_kernel_words() {
        let config = GuestConfig {
            mode: Mode::Probe,
            sequential: true,
            controllers: 16,
            ready_timeout: Duration::from_millis(1234),
            shutdown_timeout: Duration::from_secs(9),
            log: "debug,pcid=trace".to_string(),
            canary: Some("0000:00:1e.0".to_string()),
        };
        let line = format!(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 {} quiet\n",
            config.to_kernel_args().join(" ")
        );
        assert_eq!(GuestConfig::parse(&line).unwrap(), config);
    }

    #[test]
    fn every_mode_round_trips() {
        for mode in [Mode::Probe, Mode::Full, Mode::Kernel] {
            let config = GuestConfig {
                mode,
                ..GuestConfig::default()
            };
            let line = config.to_kernel_args().join(" ");
            assert_eq!(GuestConfig::parse(&line).unwrap().mode, mode);
        }
    }

    #[test]
    fn defaults_and_bare_flags() {
        let c = GuestConfig::parse("console=ttyS0 e2e.sequential").unwrap();
        assert!(c.sequential);
        assert_eq!(c.mode, Mode::Full);
        assert_eq!(GuestConfig::parse("").unwrap(), GuestConfig::default());
    }

    #[test]
    fn bad_words_are_named() {
        for word in [
            "e2e.mode=fast",
            "e2e.sequential=yes",
            "e2e.ready_ms=soon",
            "e2e.controllers=-1",
            "e2e.colour=blue",
            "e2e.log=",
            "e2e.canary=00:1e",
        ] {
            let err = GuestConfig::parse(&format!("quiet {word}")).unwrap_err();
            assert_eq!(err.word, word);
        }
    }
}
