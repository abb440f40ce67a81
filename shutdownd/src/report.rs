//! The shutdown report: a human table and the JSON form written by `--json`.
//!
//! JSON schema (times in milliseconds relative to the first `Begin`/`Shutdown`
//! sent, `null` for steps that did not happen):
//!
//! ```json
//! {"mode": "two-phase", "kind": "poweroff", "total_ms": 4503.2,
//!  "global_deadline_ms": 120000.0, "deadline_at_ms": 119998.7,
//!  "deadline_reached_ms": null, "cycles": [], "unresolved": [],
//!  "critical_path": ["participant file", "0000:00:04.0"],
//!  "devices": [
//!   {"kind": "participant", "address": null, "participant_id": 1, "driver": "file",
//!    "protocol": "two-phase", "waits_for": [], ..., "outcome": "clean", "detail": "..."},
//!   {"kind": "device", "address": "0000:00:04.0", "parent": null, "participant_id": null,
//!    "driver": "nvmed", "protocol": "two-phase", "waits_for": ["participant file"],
//!    "budget_ms": 4500.0, "begin_sent_ms": 31.2, "begin_ack_ms": 31.6,
//!    "finish_sent_ms": 31.6, "finish_deadline_ms": 7250.0, "finish_ack_ms": 4533.9,
//!    "elapsed_ms": 4500.1, "done_ms": 4533.9, "outcome": "clean", "detail": "..."}]}
//! ```
//!
//! `devices` lists participants first (their `address` is `null`, their
//! `driver` is the participant's name), then PCI devices in pcid's order.
//! `waits_for` names what had to be done before the row was asked to begin
//! (its consumers: the participants on a disk, the devices behind a
//! bridge). `critical_path` is the chain that decided when the last outcome
//! came (each step the consumer that finished last before the next could
//! begin). `cycles` lists dependency cycles found (each a closed path; the
//! ordering inside them was ignored), `unresolved` providers participants
//! named that were not listed.
//!
//! `parent` is the device's parent bridge as pcid listed it (`null` if none);
//! a bridge in the list gets `Begin` only after every device behind it has its
//! outcome. A report read back without the newer fields (`parent`, `kind`,
//! `waits_for`, `participant_id`, `unresolved`, `critical_path`) reads as a
//! device report without them.
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

use crate::ms;
use crate::scheduler::{Outcome, Scheduler};

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
    /// Dependency cycles found, each a closed path (their ordering was
    /// ignored).
    #[serde(default)]
    pub cycles: Vec<Vec<String>>,
    /// Providers participants named that were not listed (ignored).
    #[serde(default)]
    pub unresolved: Vec<String>,
    /// What decided the total: first to last.
    #[serde(default)]
    pub critical_path: Vec<String>,
    /// One entry per participant, then per device in pcid's order.
    pub devices: Vec<DeviceReport>,
}

/// One device's (or participant's) line in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// `device` or `participant`.
    #[serde(default = "device_kind")]
    pub kind: String,
    /// PCI address, `0000:00:04.0` (`None` for a participant).
    pub address: Option<String>,
    /// Parent bridge, as pcid listed it.
    #[serde(default)]
    pub parent: Option<String>,
    /// The participant's id (`None` for a device).
    #[serde(default)]
    pub participant_id: Option<u32>,
    /// Driver name, or the participant's name.
    #[serde(default)]
    pub driver: String,
    /// What had to be done before this one was asked to begin.
    #[serde(default)]
    pub waits_for: Vec<String>,
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

fn device_kind() -> String {
    "device".to_string()
}

impl DeviceReport {
    /// The address, or `participant <name>`.
    pub fn label(&self) -> String {
        self.address
            .clone()
            .unwrap_or_else(|| format!("participant {}", self.driver))
    }
}

impl Report {
    /// Builds the report from the scheduler's state; `now` is used for
    /// `total_ms` when not every device has an outcome yet.
    pub fn from_scheduler(s: &Scheduler, now: Duration) -> Self {
        let origin = s.first_send().unwrap_or(s.start());
        let rel = |t: Option<Duration>| t.map(|t| ms(t.saturating_sub(origin)));
        let end = s.finished_at().unwrap_or(now);
        let plan = s.plan();
        let devices = s
            .records()
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let one_phase = r.subject.support() == ShutdownSupport::OnePhase;
                DeviceReport {
                    kind: r.subject.kind().to_string(),
                    address: r.subject.address().map(|a| a.to_string()),
                    parent: match &r.subject {
                        crate::plan::Subject::Device(d) => d.parent.map(|p| p.to_string()),
                        crate::plan::Subject::Participant(_) => None,
                    },
                    participant_id: r.subject.participant_id(),
                    driver: r.subject.name().to_string(),
                    waits_for: plan
                        .consumers(i)
                        .iter()
                        .map(|&c| plan.subjects()[c].label())
                        .collect(),
                    protocol: r.subject.support().name().to_string(),
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
            kind: s.config().kind.name().to_string(),
            total_ms: ms(end.saturating_sub(origin)),
            global_deadline_ms: ms(s.config().global_deadline),
            deadline_at_ms: ms(s.global_end().saturating_sub(origin)),
            deadline_reached_ms: rel(s.deadline_reached()),
            cycles: plan.cycle_labels(),
            unresolved: plan.unresolved().to_vec(),
            critical_path: s
                .critical_path()
                .iter()
                .map(|&i| plan.subjects()[i].label())
                .collect(),
            devices,
        }
    }

    /// Whether the report shows the global deadline kept (see the module
    /// documentation); `Err` says how it was not. Every row must have its
    /// outcome (`done_ms`) by the limit, and so must the total; the
    /// deadline on the report's axis cannot be later than the global
    /// deadline itself (the axis starts after shutdownd's start). This
    /// holds however late a loaded machine lets shutdownd wake up, and fails
    /// if shutdownd waited for anything once it knew the deadline had
    /// passed, or gave up early.
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
        if self.deadline_at_ms > self.global_deadline_ms {
            return Err(format!(
                "deadline at {} ms on the report's axis is later than the global deadline of {} ms",
                self.deadline_at_ms, self.global_deadline_ms
            ));
        }
        if self.total_ms > limit {
            return Err(format!("total {} ms after {limit} ms", self.total_ms));
        }
        match self.devices.iter().find(|d| done(d) > limit) {
            Some(d) => Err(format!(
                "{} got its outcome at {} ms, after {limit} ms",
                d.label(),
                done(d)
            )),
            None => Ok(()),
        }
    }

    /// Reads a report from its JSON form (unknown fields are ignored).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Number of rows that ended with `outcome` (`clean`, `timed-out`, ...).
    pub fn count(&self, outcome: &str) -> usize {
        self.devices.iter().filter(|d| d.outcome == outcome).count()
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
        .map(|o| (o.as_str(), self.count(o.as_str())))
        .filter(|(_, n)| *n > 0)
        .collect()
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
                    d.address.clone().unwrap_or_else(|| d.kind.clone()),
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
        let participants = self
            .devices
            .iter()
            .filter(|d| d.kind == "participant")
            .count();
        let _ = writeln!(
            out,
            "{} devices{}: {}; total {:.1} ms ({}, {}; times in ms from the first Begin)",
            self.devices.len() - participants,
            if participants > 0 {
                format!(" and {participants} participant(s)")
            } else {
                String::new()
            },
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            },
            self.total_ms,
            self.mode,
            self.kind
        );
        let ordered: Vec<String> = self
            .devices
            .iter()
            // Rows never asked anything (no shutdown support) have no order.
            .filter(|d| !d.waits_for.is_empty() && d.begin_sent_ms.is_some())
            .map(|d| format!("{} after {}", d.label(), d.waits_for.join(", ")))
            .collect();
        if !ordered.is_empty() {
            let _ = writeln!(out, "order: {}", ordered.join("; "));
        }
        if self.critical_path.len() > 1 {
            let _ = writeln!(out, "critical path: {}", self.critical_path.join(" -> "));
        }
        for c in &self.cycles {
            let _ = writeln!(
                out,
                "error: dependency cycle {}; ordering inside it ignored",
                c.join(" -> ")
            );
        }
        for u in &self.unresolved {
            let _ = writeln!(out, "warning: {u}; ignored for ordering");
        }
        out
    }
}
