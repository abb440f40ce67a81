//! What the host reads back from the guest's serial console.

use shutdownd::Report;

use super::markers;

/// Everything of interest the guest printed.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSummary {
    /// The guest's init printed its first line.
    pub init_started: bool,
    /// `===E2E-FAILED===` messages.
    pub failures: Vec<String>,
    /// The report text between the markers, if complete.
    pub report_json: Option<String>,
    /// `key=value` pairs from `===E2E-TIMING===` lines.
    pub timings: Vec<(String, String)>,
    /// `===E2E-PROBE===` lines as `key=value` pairs.
    pub probes: Vec<Vec<(String, String)>>,
    /// `===E2E-DEVICE===` lines (pcid's device list) as `key=value` pairs.
    pub devices: Vec<Vec<(String, String)>>,
    /// The guest announced power-off.
    pub powered_off: bool,
    /// The `===E2E-CANARY===` line as `key=value` pairs, if printed.
    pub canary: Option<Vec<(String, String)>>,
    /// `===E2E-KNVME===` lines (kernel mode) as `key=value` pairs.
    pub kernel_nvme: Vec<Vec<(String, String)>>,
    /// Kernel timestamp (s) of init's power-off request in the kernel log.
    pub poweroff_requested_s: Option<f64>,
    /// Kernel timestamp (s) of the kernel's `reboot: Power down`.
    pub power_down_s: Option<f64>,
}

/// The kernel's line at the end of a power-off, after every device's
/// shutdown (`kernel_power_off`, prefixed `reboot: `).
pub const KERNEL_POWER_DOWN: &str = "reboot: Power down";

/// A console line printed by the kernel with a timestamp (`printk.time=1`):
/// `[    5.123456] text` → (5.123456, "text").
pub fn kernel_line(line: &str) -> Option<(f64, &str)> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (stamp, text) = rest.split_once(']')?;
    let seconds = stamp.trim().parse::<f64>().ok()?;
    Some((seconds, text.trim_start()))
}

/// The console did not hold a usable report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The report text is not valid JSON of the expected shape.
    #[error("shutdown report is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn pairs(rest: &str) -> Vec<(String, String)> {
    rest.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The report as printed between the markers. The guest prints it as one
/// compact JSON line; if other console output slipped into the block, the
/// line holding the JSON object is taken. A block that parses as a whole
/// (multi-line JSON) is kept as it is.
fn json_part(block: &str) -> String {
    let parses = |t: &str| serde_json::from_str::<serde_json::Value>(t).is_ok();
    if parses(block) {
        return block.to_string();
    }
    block
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{') && parses(l))
        .map_or_else(|| block.to_string(), str::to_string)
}

impl ConsoleSummary {
    /// Scans console lines. A marker may be preceded by other output on the
    /// same line (the kernel and other processes share the console).
    pub fn scan<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut s = Self::default();
        let mut in_report: Option<String> = None;
        for line in lines {
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some((at, text)) = kernel_line(line) {
                if text.contains(markers::KMSG_POWEROFF) {
                    s.poweroff_requested_s = Some(at);
                } else if text.starts_with(KERNEL_POWER_DOWN) {
                    s.power_down_s = Some(at);
                }
            }
            if let Some(buf) = in_report.as_mut() {
                if let Some(pos) = line.find(markers::REPORT_END) {
                    buf.push_str(&line[..pos]);
                    s.report_json = in_report.take().map(|b| json_part(&b));
                } else {
                    buf.push_str(line);
                    buf.push('\n');
                }
                continue;
            }
            if line.contains(markers::INIT_START) {
                s.init_started = true;
            } else if let Some(pos) = line.find(markers::REPORT_BEGIN) {
                in_report = Some(line[pos + markers::REPORT_BEGIN.len()..].to_string());
            } else if let Some(pos) = line.find(markers::FAILED) {
                s.failures
                    .push(line[pos + markers::FAILED.len()..].trim().to_string());
            } else if let Some(pos) = line.find(markers::TIMING) {
                s.timings
                    .extend(pairs(&line[pos + markers::TIMING.len()..]));
            } else if let Some(pos) = line.find(markers::DEVICE) {
                s.devices.push(pairs(&line[pos + markers::DEVICE.len()..]));
            } else if let Some(pos) = line.find(markers::PROBE) {
                s.probes.push(pairs(&line[pos + markers::PROBE.len()..]));
            } else if let Some(pos) = line.find(markers::CANARY) {
                s.canary = Some(pairs(&line[pos + markers::CANARY.len()..]));
            } else if let Some(pos) = line.find(markers::KERNEL_NVME) {
                s.kernel_nvme
                    .push(pairs(&line[pos + markers::KERNEL_NVME.len()..]));
            } else if line.contains(markers::POWEROFF) {
                s.powered_off = true;
            }
        }
        s
    }

    /// The kernel's power-off, from init's request to `reboot: Power down`
    /// (every device's shutdown included), in ms, by the kernel's clock.
    pub fn kernel_poweroff_ms(&self) -> Option<f64> {
        match (self.poweroff_requested_s, self.power_down_s) {
            (Some(a), Some(b)) if b >= a => Some((b - a) * 1000.0),
            _ => None,
        }
    }

    /// A timing value in milliseconds.
    pub fn timing(&self, key: &str) -> Option<f64> {
        self.timings
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// The report, read with shutdownd's own type.
    pub fn report(&self) -> Option<Result<Report, ReportError>> {
        self.report_json.as_deref().map(parse_report)
    }
}

/// Reads shutdownd's JSON report (as a console printed it) with shutdownd's
/// own type, [`shutdownd::Report`]: the schema is defined once.
pub fn parse_report(text: &str) -> Result<Report, ReportError> {
    Ok(Report::from_json(text)?)
}

/// `Err` saying so when `report` ran in another mode than `expected`
/// (`two-phase` or `sequential`).
pub fn check_mode(report: &Report, expected: &str) -> Result<(), String> {
    if report.mode == expected {
        Ok(())
    } else {
        Err(format!(
            "report mode is {:?}, expected {expected:?}",
            report.mode
        ))
    }
}

/// The report's JSON (pretty-printed) with a harness's run figures added
/// under `key` (`"qemu"`, `"redox"`): shutdownd's schema plus one object.
pub fn with_figures(
    report: &Report,
    key: &str,
    figures: serde_json::Value,
) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(report)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert(key.to_string(), figures);
    }
    serde_json::to_string_pretty(&value)
}

/// Reports for the harnesses' unit tests, made with shutdownd's types.
#[cfg(test)]
pub(crate) mod fixture {
    use shutdownd::{DeviceReport, Report};

    /// A device row: `address` (or a participant when `None`), `driver`,
    /// `outcome`; no times.
    pub(crate) fn row(address: Option<&str>, driver: &str, outcome: &str) -> DeviceReport {
        DeviceReport {
            kind: if address.is_some() {
                "device"
            } else {
                "participant"
            }
            .to_string(),
            address: address.map(str::to_string),
            parent: None,
            participant_id: None,
            driver: driver.to_string(),
            waits_for: Vec::new(),
            protocol: "two-phase".to_string(),
            budget_ms: None,
            begin_sent_ms: None,
            begin_ack_ms: None,
            finish_sent_ms: None,
            finish_deadline_ms: None,
            finish_ack_ms: None,
            elapsed_ms: None,
            done_ms: None,
            outcome: outcome.to_string(),
            detail: String::new(),
        }
    }

    /// A report in `mode` with `devices`.
    pub(crate) fn report(mode: &str, devices: Vec<DeviceReport>) -> Report {
        Report {
            mode: mode.to_string(),
            kind: "poweroff".to_string(),
            total_ms: 1.5,
            global_deadline_ms: 30000.0,
            deadline_at_ms: 29990.0,
            deadline_reached_ms: None,
            cycles: Vec::new(),
            unresolved: Vec::new(),
            critical_path: Vec::new(),
            devices,
        }
    }

    /// Its JSON on one line, as the guest prints it.
    pub(crate) fn json(mode: &str, devices: Vec<DeviceReport>) -> String {
        report(mode, devices).to_json_line().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_markers_amid_other_output() {
        // Pretty-printed (several lines), with a field this harness does
        // not know: both are read.
        let mut value: serde_json::Value = serde_json::from_str(&fixture::json(
            "two-phase",
            vec![fixture::row(Some("0000:00:04.0"), "nvmed", "clean")],
        ))
        .unwrap();
        value["devices"][0]["extra"] = 1.into();
        let json = serde_json::to_string_pretty(&value).unwrap();
        let console = format!(
            "SeaBIOS noise\n{init}\r\n{canary} address=0000:00:1e.0 outcome=clean\ne2e: starting pcid\n[ 1.2] kernel: x {timing} shutdownd_ms=12.5 a=b\n{begin}\n{json}\n{end}\n{failed} nothing\n{poweroff} uptime_ms=9\n",
            init = markers::INIT_START,
            canary = markers::CANARY,
            timing = markers::TIMING,
            begin = markers::REPORT_BEGIN,
            end = markers::REPORT_END,
            failed = markers::FAILED,
            poweroff = markers::POWEROFF,
        );
        let s = ConsoleSummary::scan(console.lines());
        assert!(s.init_started && s.powered_off);
        assert_eq!(
            s.canary,
            Some(vec![
                ("address".to_string(), "0000:00:1e.0".to_string()),
                ("outcome".to_string(), "clean".to_string())
            ])
        );
        assert_eq!(s.timing("shutdownd_ms"), Some(12.5));
        assert_eq!(s.failures, vec!["nothing".to_string()]);
        let report = s.report().unwrap().unwrap();
        assert_eq!(report.mode, "two-phase");
        assert_eq!(report.devices[0].outcome, "clean");
        assert_eq!(report.devices[0].label(), "0000:00:04.0");
    }

    #[test]
    fn the_kernels_power_off_is_timed_from_its_log() {
        let request = format!("[    5.250000] {}", markers::KMSG_POWEROFF);
        let s = ConsoleSummary::scan([
            "[    1.000000] nvme nvme0: 1/0/0 default/read/poll queues",
            "e2e: writing",
            request.as_str(),
            "[    5.900500] reboot: Power down",
        ]);
        assert_eq!(s.poweroff_requested_s, Some(5.25));
        assert_eq!(s.power_down_s, Some(5.9005));
        let ms = s.kernel_poweroff_ms().unwrap();
        assert!((ms - 650.5).abs() < 1e-6, "{ms}");
        assert_eq!(kernel_line("[12.5]x"), Some((12.5, "x")));
        assert_eq!(kernel_line("[ abc] x"), None);
        assert_eq!(kernel_line("no stamp"), None);
        // Without both lines, or out of order: no figure.
        let half = ConsoleSummary::scan(["[    5.9] reboot: Power down"]);
        assert_eq!(half.kernel_poweroff_ms(), None);
        let late_request = format!("[    6.0] {}", markers::KMSG_POWEROFF);
        let backwards =
            ConsoleSummary::scan([late_request.as_str(), "[    5.0] reboot: Power down"]);
        assert_eq!(backwards.kernel_poweroff_ms(), None);
        let knvme = format!(
            "{} name=nvme0 address=0000:00:02.0 serial=E2E-NVME-00 state=live written=4096",
            markers::KERNEL_NVME
        );
        let k = ConsoleSummary::scan([knvme.as_str()]);
        assert_eq!(k.kernel_nvme.len(), 1);
        assert_eq!(
            k.kernel_nvme[0][3],
            ("state".to_string(), "live".to_string())
        );
    }

    #[test]
    fn stray_console_lines_inside_the_block_are_skipped() {
        let json = fixture::json("sequential", Vec::new());
        let s = ConsoleSummary::scan([
            markers::REPORT_BEGIN,
            "[2026-11-25T08:34:40Z INFO ] shutdown session ended",
            json.as_str(),
            markers::REPORT_END,
        ]);
        assert_eq!(s.report().unwrap().unwrap().mode, "sequential");
    }

    #[test]
    fn truncated_or_bad_reports_are_detected() {
        let s = ConsoleSummary::scan([markers::REPORT_BEGIN, "{\"mode\": "]);
        assert!(s.report().is_none(), "no end marker: no report");
        let s = ConsoleSummary::scan([markers::REPORT_BEGIN, "{\"mode\": 1}", markers::REPORT_END]);
        assert!(matches!(s.report(), Some(Err(ReportError::Json(_)))));
        assert!(!ConsoleSummary::scan(["hello"]).init_started);
    }
}
