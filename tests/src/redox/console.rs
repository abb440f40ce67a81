//! What the host reads from Redox's serial console.
//!
//! The guest's `init.rc` prints markers with `echo`; shutdownd prints its
//! JSON report (`--json -`) after the report marker and then powers the
//! machine off itself, so the report has no end marker: it is the first
//! complete JSON object after the begin marker.

use crate::qemu::markers;
use crate::qemu::report::{parse_report, ReportError};

/// Printed by init.rc once pcid and pcid-spawner returned (drivers started).
pub const DRIVERS_UP: &str = "===E2E-DRIVERS-UP===";
/// Printed by the kernel when it starts.
pub const KERNEL_START: &str = "Redox OS starting";
/// Printed by the kernel when something asked it to power off or reset.
pub const KSTOP: &str = "Running kstop()";

/// Removes ANSI colour sequences and NUL bytes (Redox's logger colours its
/// lines; the serial port passes them through).
pub fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\0' && c != '\r' {
            out.push(c);
        }
    }
    out
}

/// The console of one boot.
#[derive(Debug, Clone, Default)]
pub struct Console {
    /// Cleaned lines.
    pub lines: Vec<String>,
    /// The kernel started.
    pub kernel_started: bool,
    /// init ran init.rc.
    pub init_started: bool,
    /// pcid and pcid-spawner returned.
    pub drivers_up: bool,
    /// The kernel's power-off / reset path ran.
    pub kstop: bool,
    /// `===E2E-FAILED===` messages.
    pub failures: Vec<String>,
    /// The report's text, if a whole JSON object followed the marker.
    pub report_json: Option<String>,
    /// The report marker was printed.
    pub report_started: bool,
    /// `===E2E-PROBE===` lines of the test probe, as `key=value` pairs.
    pub probes: Vec<Vec<(String, String)>>,
}

/// Value of `key` in a probe line.
pub fn field<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

impl Console {
    /// Scans raw console lines.
    pub fn scan<'a>(raw: impl IntoIterator<Item = &'a str>) -> Self {
        let mut c = Self::default();
        let mut report: Option<String> = None;
        for r in raw {
            let line = clean(r);
            if line.contains(KERNEL_START) {
                c.kernel_started = true;
            }
            if line.contains(markers::INIT_START) {
                c.init_started = true;
            }
            if line.contains(DRIVERS_UP) {
                c.drivers_up = true;
            }
            if line.contains(KSTOP) {
                c.kstop = true;
            }
            if let Some(pos) = line.find(markers::PROBE) {
                c.probes.push(
                    line[pos + markers::PROBE.len()..]
                        .split_whitespace()
                        .filter_map(|w| w.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
            }
            if let Some(pos) = line.find(markers::FAILED) {
                c.failures
                    .push(line[pos + markers::FAILED.len()..].trim().to_string());
            }
            if line.contains(markers::REPORT_BEGIN) {
                c.report_started = true;
                report = Some(String::new());
            } else if let Some(buf) = report.as_mut() {
                if c.report_json.is_none()
                    && (!buf.is_empty() || line.trim_start().starts_with('{'))
                {
                    buf.push_str(&line);
                    buf.push('\n');
                    if serde_json::from_str::<serde_json::Value>(buf).is_ok() {
                        c.report_json = Some(buf.clone());
                    }
                }
            }
            c.lines.push(line);
        }
        c
    }

    /// The report, read with shutdownd's own type.
    pub fn report(&self) -> Option<Result<shutdownd::Report, ReportError>> {
        self.report_json.as_deref().map(parse_report)
    }

    /// The last `n` lines, joined for a one-line message.
    pub fn tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        let t: Vec<&str> = self.lines[start..]
            .iter()
            .map(String::as_str)
            .filter(|l| !l.trim().is_empty())
            .collect();
        if t.is_empty() {
            "nothing".to_string()
        } else {
            t.join(" | ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::report::fixture;

    #[test]
    fn colours_are_removed() {
        assert_eq!(clean("\u{1b}[1;32mINFO\u{1b}[0m pcid\r\0"), "INFO pcid");
    }

    #[test]
    fn the_report_is_the_first_whole_json_object_after_the_marker() {
        // A report printed across two lines.
        let json = fixture::json(
            "two-phase",
            vec![fixture::row(Some("0000:00:01.0"), "nvmed", "clean")],
        );
        let (first, second) = json.split_at(json.find("\"devices\"").unwrap());
        let (first, second) = (first.to_string(), second.to_string());
        let console = [
            "kernel::arch::x86_shared::start:INFO -- Redox OS starting...",
            markers::INIT_START,
            DRIVERS_UP,
            markers::REPORT_BEGIN,
            "shutdownd: 2 devices",
            first.as_str(),
            second.as_str(),
            "{\"other\": 1}",
            "kernel::arch::x86_shared::stop:INFO -- Running kstop()",
        ];
        let c = Console::scan(console);
        assert!(c.kernel_started && c.init_started && c.drivers_up && c.kstop);
        let report = c.report().unwrap().unwrap();
        assert_eq!(report.mode, "two-phase");
        assert_eq!(report.devices[0].outcome, "clean");
    }

    #[test]
    fn a_cut_off_report_is_no_report() {
        let c = Console::scan([markers::REPORT_BEGIN, "{\"mode\": \"two"]);
        assert!(c.report_started);
        assert!(c.report().is_none());
        let json = fixture::json("two-phase", Vec::new());
        let c = Console::scan([json.as_str()]);
        assert!(
            c.report().is_none(),
            "JSON before the marker is not the report"
        );
    }
}
