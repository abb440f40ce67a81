//! The shutdown report: a human table and the JSON form written by `--json`.
//!
//! JSON schema (times in milliseconds relative to the first `Begin`/`Shutdown`
//! sent, `null` for steps that did not happen):
//!
//! ```json
//! {"mode": "two-phase", "kind": "poweroff", "total_ms": 4503.2,
//!  "global_deadline_ms": 120000.0, "deadline_at_ms": 119998.7,
//!  "deadline_reached_ms": null, "cycles": [],
//!  "devices": [{"address": "0000:00:04.0", "parent": null, "driver": "nvmed", "protocol": "two-phase",
//!    "budget_ms": 4500.0, "begin_sent_ms": 0.0, "begin_ack_ms": 0.4,
//!    "finish_sent_ms": 0.4, "finish_deadline_ms": 7250.0, "finish_ack_ms": 4502.9,
//!    "elapsed_ms": 4500.1, "outcome": "clean", "detail": "..."}]}
//! ```
//!
//! `parent` is the device's parent bridge as pcid listed it (`null` if none);
//! a bridge in the list gets `Begin` only after every device behind it has its
//! outcome. A report without `parent` (written before it existed) reads as
//! having none.
//!
//! For a one-phase driver `begin_sent_ms` is when `Shutdown` was sent,
//! `begin_ack_ms`, `finish_sent_ms` and `budget_ms` are `null`, and
//! `finish_ack_ms` is when its `FinishAck` arrived. `total_ms` runs from the
//! first message sent to the last outcome.
//!
//! `global_deadline_ms` counts from shutdownd's start; `deadline_at_ms` is the
//! same instant on the report's time axis. `deadline_reached_ms` is when
//! shutdownd found the deadline passed with devices still open — it gives
//! them all their outcome at that moment — or `null` if every device had its
//! outcome before. So a report keeps its deadline exactly when every
//! `done_ms` is at most `deadline_at_ms`, or when `deadline_reached_ms` is at
//! least `deadline_at_ms` and no `done_ms` is later than it: a check that
//! holds however late the machine let shutdownd wake up ([`Report::kept_deadline`]).

use std::fmt::Write as _;
use std::time::Duration;

use pcid_interface::protocol::ShutdownSupport;
use serde::{Deserialize, Serialize};

use crate::scheduler::{kind_str, support_str, Outcome, Scheduler};

/// The whole report. It reads back from its JSON form ([`Report::from_json`]),
/// so a report saved on another machine can be drawn ([`crate::svg`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `two-phase` or `sequential`.
    pub mode: String,
    /// `poweroff` or `reboot`.
    pub kind: String,
    /// From the first message sent to the last outcome, in ms.
    pub total_ms: f64,
    /// The global deadline in force, in ms (from shutdownd's start).
    pub global_deadline_ms: f64,
    /// The global deadline on this report's time axis.
    pub deadline_at_ms: f64,
    /// When shutdownd found the deadline passed with devices still open
    /// (all of them got their outcome then); `None` if none was open.
    pub deadline_reached_ms: Option<f64>,
    /// Parent cycles found in the device list (their ordering was ignored).
    #[serde(default)]
    pub cycles: Vec<Vec<String>>,
    /// One entry per device, in pcid's order.
    pub devices: Vec<DeviceReport>,
}

/// One device's line in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// PCI address, `0000:00:04.0`.
    pub address: String,
    /// Parent bridge, as pcid listed it.
    #[serde(default)]
    pub parent: Option<String>,
    /// Driver name.
    #[serde(default)]
    pub driver: String,
    /// `two-phase`, `one-phase` or `none`.
    #[serde(default)]
    pub protocol: String,
    /// Budget from `BeginAck`.
    pub budget_ms: Option<f64>,
    /// When `Begin` (or one-phase `Shutdown`) was sent.
    pub begin_sent_ms: Option<f64>,
    /// When `BeginAck` arrived.
    pub begin_ack_ms: Option<f64>,
    /// When `Finish` was sent.
    pub finish_sent_ms: Option<f64>,
    /// Deadline carried by `Finish` (or by a one-phase `Shutdown`).
    pub finish_deadline_ms: Option<f64>,
    /// When `FinishAck` arrived.
    pub finish_ack_ms: Option<f64>,
    /// Shutdown time measured by the driver.
    pub elapsed_ms: Option<f64>,
    /// When the outcome was recorded (for `no-response` / `driver-died`: when detected).
    pub done_ms: Option<f64>,
    /// Final outcome.
    pub outcome: String,
    /// Explanation from the driver or the scheduler.
    #[serde(default)]
    pub detail: String,
}

fn ms(d: Duration) -> f64 {
    // Microsecond resolution, rounded to 0.001 ms.
    (d.as_micros() as f64) / 1000.0
}

impl Report {
    /// Builds the report from the scheduler's state; `now` is used for
    /// `total_ms` when not every device has an outcome yet.
    pub fn from_scheduler(s: &Scheduler, now: Duration) -> Self {
        let origin = s.first_send().unwrap_or(s.start());
        let rel = |t: Option<Duration>| t.map(|t| ms(t.saturating_sub(origin)));
        let end = s.finished_at().unwrap_or(now);
        let devices = s
            .records()
            .iter()
            .map(|r| {
                let one_phase = r.info.support == ShutdownSupport::OnePhase;
                DeviceReport {
                    address: r.info.address.to_string(),
                    parent: r.info.parent.map(|p| p.to_string()),
                    driver: r.info.driver.clone(),
                    protocol: support_str(r.info.support).to_string(),
                    budget_ms: r.budget.map(ms),
                    begin_sent_ms: rel(r.begin_sent),
                    begin_ack_ms: rel(r.begin_ack),
                    finish_sent_ms: rel(r.finish_sent),
                    finish_deadline_ms: if one_phase {
                        r.begin_deadline.map(ms)
                    } else {
                        r.finish_deadline.map(ms)
                    },
                    finish_ack_ms: rel(r.finish_ack),
                    elapsed_ms: r.elapsed.map(ms),
                    done_ms: rel(r.done_at),
                    outcome: r.outcome.map_or("pending", Outcome::as_str).to_string(),
                    detail: r.detail.clone(),
                }
            })
            .collect();
        Self {
            mode: s.config().mode.as_str().to_string(),
            kind: kind_str(s.config().kind).to_string(),
            total_ms: ms(end.saturating_sub(origin)),
            global_deadline_ms: ms(s.config().global_deadline),
            deadline_at_ms: ms(s.global_end().saturating_sub(origin)),
            deadline_reached_ms: rel(s.deadline_reached()),
            cycles: s
                .plan()
                .cycles()
                .iter()
                .map(|c| c.iter().map(ToString::to_string).collect())
                .collect(),
            devices,
        }
    }

    /// Whether the report shows the global deadline kept (see the module
    /// documentation); `Err` says how it was not.
    pub fn kept_deadline(&self) -> Result<(), String> {
        let done = |d: &DeviceReport| d.done_ms.unwrap_or(f64::INFINITY);
        let limit = match self.deadline_reached_ms {
            None => self.deadline_at_ms,
            Some(r) if r < self.deadline_at_ms => {
                return Err(format!(
                    "the deadline was found passed at {r} ms, before it ({} ms)",
                    self.deadline_at_ms
                ))
            }
            Some(r) => r,
        };
        match self.devices.iter().find(|d| done(d) > limit) {
            Some(d) => Err(format!(
                "{} got its outcome at {} ms, after {limit} ms",
                d.address,
                done(d)
            )),
            None => Ok(()),
        }
    }

    /// True when every device ended `clean` or `not-supported`.
    pub fn all_ok(&self) -> bool {
        self.devices
            .iter()
            .all(|d| d.outcome == "clean" || d.outcome == "not-supported")
    }

    /// Count of devices per outcome, in a fixed order, omitting zeros.
    pub fn outcome_counts(&self) -> Vec<(&'static str, usize)> {
        [
            Outcome::Clean,
            Outcome::Abrupt,
            Outcome::TimedOut,
            Outcome::Failed,
            Outcome::NoResponse,
            Outcome::DriverDied,
            Outcome::NotSupported,
        ]
        .iter()
        .map(|o| {
            (
                o.as_str(),
                self.devices
                    .iter()
                    .filter(|d| d.outcome == o.as_str())
                    .count(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    /// Reads a report from its JSON form (unknown fields are ignored).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// JSON text of the report (pretty-printed).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The JSON form on one line (for a console shared with other output).
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        let header = [
            "ADDRESS",
            "DRIVER",
            "PROTOCOL",
            "BUDGET",
            "BEGIN",
            "BEGIN-ACK",
            "FINISH-ACK",
            "OUTCOME",
            "DETAIL",
        ];
        let rows: Vec<[String; 9]> = self
            .devices
            .iter()
            .map(|d| {
                [
                    d.address.clone(),
                    d.driver.clone(),
                    d.protocol.clone(),
                    opt(d.budget_ms),
                    opt(d.begin_sent_ms),
                    opt(d.begin_ack_ms),
                    opt(d.finish_ack_ms),
                    d.outcome.clone(),
                    d.detail.clone(),
                ]
            })
            .collect();
        let mut width = header.map(str::len);
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (k, (cell, w)) in cells.iter().zip(width).enumerate() {
                if k + 1 == cells.len() {
                    l.push_str(cell);
                } else if (3..=6).contains(&k) {
                    let _ = write!(l, "{cell:>w$}  ");
                } else {
                    let _ = write!(l, "{cell:<w$}  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&header.map(String::from));
        for row in &rows {
            line(row);
        }
        let counts: Vec<String> = self
            .outcome_counts()
            .iter()
            .map(|(o, n)| format!("{n} {o}"))
            .collect();
        let _ = writeln!(
            out,
            "{} devices: {}; total {:.1} ms ({}, {}; times in ms from the first Begin)",
            self.devices.len(),
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            },
            self.total_ms,
            self.mode,
            self.kind
        );
        for c in &self.cycles {
            let _ = writeln!(
                out,
                "warning: parent cycle {} ignored for ordering",
                c.join(" -> ")
            );
        }
        out
    }
}
