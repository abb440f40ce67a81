//! A picture of one shutdown: the report drawn as an SVG timeline.
//!
//! One row per device (address and driver on the left, outcome and the time
//! it was reached on the right), on a shared time axis in milliseconds from
//! the first `Begin`:
//!
//! * a bar from `Begin` sent to the outcome, coloured by outcome;
//! * marks for `Begin` sent (tick), `BeginAck` (circle), `Finish` sent
//!   (triangle) and `FinishAck` (diamond);
//! * the budget the driver announced in `BeginAck` (dashed outline from
//!   `BeginAck`), the time the driver measured for its device (a thin line
//!   from `Begin` sent) and the device's own deadline (a red cap);
//! * the global deadline (red dashed line, or a note when it lies far beyond
//!   the last event) and, if shutdownd found it passed, that moment;
//! * the critical path — the device that finished last and, when it is a
//!   bridge, the device behind it that it waited for, and so on down —
//!   outlined and named in the header;
//! * devices behind a bridge listed under that bridge's address; a bridge
//!   that is itself in the report comes after the devices behind it, with a
//!   dashed arrow from the last of them to its own `Begin`.
//!
//! Large reports stay readable by folding: past [`SvgOptions::fold_above`]
//! devices, runs of at least [`MIN_FOLD`] neighbouring devices of the same
//! group, driver and successful outcome (`clean`, `not-supported`) that are
//! not on the critical path are drawn as one row showing their spread
//! (earliest start to latest outcome, and the median device). Every device
//! whose outcome is not a success keeps a row of its own.
//!
//! The output is plain SVG 1.1 with an embedded style sheet; each device row
//! is a `<g class="device outcome-…" data-address="…">` and each folded row a
//! `<g class="fold outcome-…" data-count="N" data-addresses="a b …">`, so a
//! test (or a script) can find them. Text from the report is escaped; times
//! that are missing, negative or not finite are left out or clamped, so any
//! report that parses draws.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use crate::report::{DeviceReport, Report};

/// Fewest neighbouring devices folded into one row.
pub const MIN_FOLD: usize = 3;

/// How to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvgOptions {
    /// Fold runs of alike successful devices when the report has more than
    /// this many devices (`usize::MAX`: never fold).
    pub fold_above: usize,
}

impl Default for SvgOptions {
    fn default() -> Self {
        Self { fold_above: 48 }
    }
}

const WIDTH: f64 = 1100.0;
const LABEL_X: f64 = 12.0;
const CHART_X0: f64 = 290.0;
const CHART_X1: f64 = 930.0;
const RIGHT_X: f64 = 942.0;
const ROW_H: f64 = 18.0;
const GROUP_H: f64 = 16.0;
const HEADER_H: f64 = 70.0;
const AXIS_H: f64 = 22.0;
const LEGEND_H: f64 = 92.0;

/// Outcomes in legend order, with their fill colours (Okabe–Ito based, so
/// they stay apart for colour-blind readers; the outcome is also written in
/// each row).
const OUTCOMES: [(&str, &str); 8] = [
    ("clean", "#009e73"),
    ("abrupt", "#e69f00"),
    ("timed-out", "#d55e00"),
    ("failed", "#c0143c"),
    ("no-response", "#cc79a7"),
    ("driver-died", "#3b3b3b"),
    ("not-supported", "#9a9a9a"),
    ("pending", "#56b4e9"),
];

fn is_success(outcome: &str) -> bool {
    outcome == "clean" || outcome == "not-supported"
}

/// Escapes text for XML content and attribute values, dropping characters
/// XML 1.0 does not allow.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A CSS class name for an outcome string from the report (anything
/// unexpected becomes `other`).
fn outcome_class(outcome: &str) -> &str {
    if OUTCOMES.iter().any(|(o, _)| *o == outcome) {
        outcome
    } else {
        "other"
    }
}

/// A finite, non-negative time or nothing.
fn t(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite() && *v >= 0.0)
}

/// Cuts `s` to at most `n` characters, marking the cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

fn fmt_ms(v: f64) -> String {
    if !v.is_finite() {
        "unknown".to_string()
    } else if v.abs() >= 1e9 {
        format!("{v:.3e} ms")
    } else if v >= 10_000.0 {
        format!("{:.0} ms", v)
    } else {
        format!("{:.1} ms", v)
    }
}

/// When a device's own deadline falls, on the report's axis.
fn device_deadline(d: &DeviceReport) -> Option<f64> {
    let dl = t(d.finish_deadline_ms)?;
    let from = if d.protocol == "one-phase" {
        t(d.begin_sent_ms)?
    } else {
        t(d.finish_sent_ms)?
    };
    Some(from + dl)
}

/// When the device's announced budget runs out, on the report's axis.
fn budget_end(d: &DeviceReport) -> Option<f64> {
    Some(t(d.begin_ack_ms)? + t(d.budget_ms)?)
}

/// The end of a device's bar: its outcome, else its last answer.
fn end_of(d: &DeviceReport) -> Option<f64> {
    t(d.done_ms).or(t(d.finish_ack_ms)).or(t(d.begin_ack_ms))
}

/// Devices, in drawing order, and what ties them together.
struct Layout {
    /// Display items: groups and rows.
    items: Vec<Item>,
    /// Indices of devices that are parents of other listed devices.
    children: HashMap<usize, Vec<usize>>,
    /// Devices on the critical path.
    critical: Vec<usize>,
}

enum Item {
    /// A group heading: devices behind a bridge that has no row of its own.
    Group(String),
    /// One device (index into the report), indented by depth.
    Row { dev: usize, depth: usize },
    /// Several alike devices in one row.
    Fold { devs: Vec<usize>, depth: usize },
}

fn layout(report: &Report, opts: &SvgOptions) -> Layout {
    let devs = &report.devices;
    let index: HashMap<&str, usize> = devs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.address.as_str(), i))
        .collect();
    // Parent index for devices whose parent has a row.
    let parent: Vec<Option<usize>> = devs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.parent
                .as_deref()
                .and_then(|p| index.get(p).copied())
                .filter(|&p| p != i)
        })
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            children.entry(*p).or_default().push(i);
        }
    }

    // Critical path: the device that finished last, then down through the
    // child each bridge waited for (the last of its children to finish).
    let mut critical = Vec::new();
    let done = |i: usize| t(devs[i].done_ms).unwrap_or(f64::NEG_INFINITY);
    let mut last: Option<usize> = None;
    for (i, d) in devs.iter().enumerate() {
        if t(d.done_ms).is_some() && last.is_none_or(|l| done(i) > done(l)) {
            last = Some(i);
        }
    }
    let mut seen = HashSet::new();
    while let Some(i) = last {
        if !seen.insert(i) {
            break;
        }
        critical.push(i);
        last = children.get(&i).and_then(|c| {
            c.iter()
                .copied()
                .filter(|&k| t(devs[k].done_ms).is_some())
                .fold(None, |best: Option<usize>, k| match best {
                    Some(b) if done(b) >= done(k) => Some(b),
                    _ => Some(k),
                })
        });
    }

    // Rows: top-level devices grouped by the unlisted bridge they sit behind
    // (groups in order of first appearance); a listed bridge comes right
    // after the devices behind it (children before parents, as the shutdown
    // orders them).
    let mut groups: Vec<(Option<&str>, Vec<usize>)> = Vec::new();
    let mut group_of: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for (i, d) in devs.iter().enumerate() {
        if parent[i].is_some() {
            continue;
        }
        let key = d.parent.as_deref().filter(|p| *p != d.address);
        let g = *group_of.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let mut visited = vec![false; devs.len()];
    let mut rows_by_group: Vec<(Option<String>, Vec<RowAt>)> = Vec::new();
    for (key, tops) in &groups {
        let mut rows = Vec::new();
        for &top in tops {
            post_order(top, 0, &children, &mut visited, &mut rows);
        }
        rows_by_group.push((key.map(str::to_string), rows));
    }
    // Devices only reachable through a parent cycle.
    let mut rest = Vec::new();
    for i in 0..devs.len() {
        if !visited[i] {
            post_order(i, 0, &children, &mut visited, &mut rest);
        }
    }
    if !rest.is_empty() {
        rows_by_group.push((Some("a parent cycle".to_string()), rest));
    }

    let fold = devs.len() > opts.fold_above;
    let critical_set: HashSet<usize> = critical.iter().copied().collect();
    let foldable = |i: usize| {
        is_success(&devs[i].outcome) && !critical_set.contains(&i) && !children.contains_key(&i)
    };
    let alike = |a: usize, b: usize| {
        devs[a].driver == devs[b].driver
            && devs[a].outcome == devs[b].outcome
            && devs[a].protocol == devs[b].protocol
    };
    let mut items = Vec::new();
    for (key, rows) in rows_by_group {
        if let Some(k) = key {
            items.push(Item::Group(k));
        }
        let mut k = 0;
        while k < rows.len() {
            let (dev, depth) = rows[k];
            let mut run = vec![dev];
            if fold && foldable(dev) {
                while let Some(&(next, nd)) = rows.get(k + run.len()) {
                    if nd == depth && foldable(next) && alike(dev, next) {
                        run.push(next);
                    } else {
                        break;
                    }
                }
            }
            k += run.len();
            if run.len() >= MIN_FOLD {
                items.push(Item::Fold { devs: run, depth });
            } else {
                items.extend(run.into_iter().map(|dev| Item::Row { dev, depth }));
            }
        }
    }
    Layout {
        items,
        children,
        critical,
    }
}

/// A device (index) and its depth below the listed bridges.
type RowAt = (usize, usize);

fn post_order(
    i: usize,
    depth: usize,
    children: &HashMap<usize, Vec<usize>>,
    visited: &mut [bool],
    out: &mut Vec<RowAt>,
) {
    if visited[i] {
        return;
    }
    visited[i] = true;
    for &c in children.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
        post_order(c, depth + 1, children, visited, out);
    }
    out.push((i, depth));
}

/// The time axis.
struct Axis {
    extent: f64,
}

impl Axis {
    fn x(&self, ms: f64) -> f64 {
        let ms = if ms.is_finite() { ms } else { 0.0 };
        CHART_X0 + (ms.clamp(0.0, self.extent) / self.extent) * (CHART_X1 - CHART_X0)
    }

    /// Tick step: 1, 2 or 5 × 10^k, about eight ticks.
    fn step(&self) -> f64 {
        let raw = self.extent / 8.0;
        let mag = 10f64.powf(raw.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * mag)
    }

    fn label(&self, ms: f64) -> String {
        if self.extent >= 2000.0 {
            let s = ms / 1000.0;
            if (s - s.round()).abs() < 1e-9 {
                format!("{s:.0} s")
            } else {
                format!("{s} s")
            }
        } else if ms >= 1.0 || ms == 0.0 {
            format!("{} ms", (ms * 1000.0).round() / 1000.0)
        } else {
            format!("{ms:.3} ms")
        }
    }
}

fn axis_for(report: &Report) -> (Axis, bool) {
    let mut extent: f64 = t(Some(report.total_ms)).unwrap_or(0.0);
    for d in &report.devices {
        for v in [
            t(d.done_ms),
            t(d.finish_ack_ms),
            t(d.begin_ack_ms),
            device_deadline(d),
            budget_end(d),
            t(d.begin_sent_ms).zip(t(d.elapsed_ms)).map(|(a, b)| a + b),
        ]
        .into_iter()
        .flatten()
        {
            extent = extent.max(v);
        }
    }
    if let Some(r) = t(report.deadline_reached_ms) {
        extent = extent.max(r);
    }
    let deadline = t(Some(report.deadline_at_ms));
    let show_deadline = deadline.is_some_and(|dl| dl <= extent * 1.25 || extent == 0.0);
    if let (true, Some(dl)) = (show_deadline, deadline) {
        extent = extent.max(dl);
    }
    // Room after the last event, and a floor for reports with no times.
    let extent = (extent * 1.03).clamp(0.001, 1e12);
    (Axis { extent }, show_deadline)
}

const STYLE: &str = "
text { font-family: 'DejaVu Sans', Verdana, Arial, sans-serif; font-size: 11px; fill: #222; }
.mono { font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 11px; }
.title { font-size: 16px; font-weight: bold; }
.sub { font-size: 12px; fill: #444; }
.crit-text { font-weight: bold; }
.tick { font-size: 10px; fill: #555; }
.grid { stroke: #e4e4e4; stroke-width: 1; }
.axis { stroke: #888; stroke-width: 1; }
.detail { font-size: 10px; fill: #555; }
.group { font-size: 10px; fill: #666; font-style: italic; }
.band { stroke: none; }
.bar { stroke: none; }
.crit { stroke: #000; stroke-width: 2; }
.budget { fill: none; stroke: #555; stroke-width: 1; stroke-dasharray: 3 2; }
.measured { stroke: #111; stroke-width: 1.5; }
.mark-begin { stroke: #222; stroke-width: 1.5; }
.mark-beginack { fill: #fff; stroke: #222; stroke-width: 1.2; }
.mark-finish { fill: #222; stroke: none; }
.mark-finishack { fill: #fff; stroke: #222; stroke-width: 1.2; }
.deadline { stroke: #c0143c; stroke-width: 2; }
.global-deadline { stroke: #c0143c; stroke-width: 1.5; stroke-dasharray: 6 3; }
.deadline-reached { stroke: #e69f00; stroke-width: 1.5; stroke-dasharray: 2 2; }
.dep { stroke: #777; stroke-width: 1; stroke-dasharray: 2 2; fill: none; }
.stripe { fill: #f6f6f6; }
";

fn outcome_rules() -> String {
    let mut s = String::new();
    for (o, c) in OUTCOMES {
        let _ = writeln!(s, ".outcome-{o} .bar, .swatch-{o} {{ fill: {c}; }}");
        let _ = writeln!(s, ".outcome-{o} .band {{ fill: {c}; fill-opacity: 0.35; }}");
    }
    s.push_str(".outcome-other .bar, .outcome-other .band { fill: #777; }\n");
    s
}

/// Draws `report` as an SVG document.
pub fn render(report: &Report, opts: &SvgOptions) -> String {
    let lay = layout(report, opts);
    let (axis, show_deadline) = axis_for(report);
    let devs = &report.devices;
    let critical: HashSet<usize> = lay.critical.iter().copied().collect();

    let rows_h: f64 = lay
        .items
        .iter()
        .map(|i| match i {
            Item::Group(_) => GROUP_H,
            _ => ROW_H,
        })
        .sum();
    let chart_top = HEADER_H + AXIS_H;
    let chart_bottom = chart_top + rows_h.max(ROW_H);
    let height = chart_bottom + 8.0 + LEGEND_H;

    let mut s = String::with_capacity(4096 + devs.len() * 900);
    let _ = write!(
        s,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" \
         version=\"1.1\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         class=\"shutdown-timeline\" data-devices=\"{}\">\n",
        devs.len()
    );
    let _ = writeln!(
        s,
        "<title>shutdown timeline: {} devices, {}</title>",
        devs.len(),
        esc(&report.mode)
    );
    let _ = writeln!(s, "<style>{STYLE}{}</style>", outcome_rules());
    let _ = writeln!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#fff\"/>"
    );

    // Header: what happened, in two lines.
    let counts: Vec<String> = report
        .outcome_counts()
        .iter()
        .map(|(o, n)| format!("{n} {o}"))
        .collect();
    let mut others: BTreeMap<&str, usize> = BTreeMap::new();
    for d in devs {
        if outcome_class(&d.outcome) == "other" || d.outcome == "pending" {
            *others.entry(d.outcome.as_str()).or_default() += 1;
        }
    }
    let mut counts = counts;
    counts.extend(others.iter().map(|(o, n)| format!("{n} {o}")));
    let _ = writeln!(
        s,
        "<text class=\"title\" x=\"{LABEL_X}\" y=\"22\">Shutdown of {} device{} — {}, {} — {} total</text>",
        devs.len(),
        if devs.len() == 1 { "" } else { "s" },
        esc(&report.mode),
        esc(&report.kind),
        fmt_ms(t(Some(report.total_ms)).unwrap_or(0.0))
    );
    let deadline_note = if show_deadline {
        format!("global deadline {}", fmt_ms(report.deadline_at_ms))
    } else {
        format!(
            "global deadline {} (beyond the right edge)",
            fmt_ms(report.deadline_at_ms)
        )
    };
    let _ = writeln!(
        s,
        "<text class=\"sub\" x=\"{LABEL_X}\" y=\"41\">{}; {}{}</text>",
        esc(&if counts.is_empty() {
            "no devices".to_string()
        } else {
            counts.join(", ")
        }),
        esc(&deadline_note),
        match t(report.deadline_reached_ms) {
            Some(r) => format!(", found passed at {}", fmt_ms(r)),
            None => String::new(),
        }
    );
    let crit_text = match lay.critical.first() {
        Some(&c) => {
            let d = &devs[c];
            let mut text = format!(
                "critical path: {} {} — {} at {}",
                d.address,
                d.driver,
                d.outcome,
                fmt_ms(t(d.done_ms).unwrap_or(0.0))
            );
            for &k in lay.critical.iter().skip(1) {
                let _ = write!(text, ", after {} {}", devs[k].address, devs[k].driver);
            }
            text
        }
        None => "critical path: none (no device has an outcome)".to_string(),
    };
    let _ = writeln!(
        s,
        "<text class=\"sub crit-text\" x=\"{LABEL_X}\" y=\"58\">{}</text>",
        esc(&clip(&crit_text, 170))
    );

    // Axis and grid.
    let step = axis.step();
    let _ = writeln!(s, "<g class=\"axis-ticks\">");
    let mut k = 0u32;
    loop {
        let v = f64::from(k) * step;
        if v > axis.extent + 1e-9 || k > 100 {
            break;
        }
        let x = axis.x(v);
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{chart_top}\" x2=\"{x:.1}\" y2=\"{chart_bottom}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            chart_top - 6.0,
            esc(&axis.label(v))
        );
        k += 1;
    }
    let _ = writeln!(
        s,
        "<line class=\"axis\" x1=\"{CHART_X0}\" y1=\"{chart_top}\" x2=\"{CHART_X1}\" y2=\"{chart_top}\"/>"
    );
    let _ = writeln!(s, "</g>");

    // Rows.
    let mut y = chart_top;
    let mut row_y: HashMap<usize, f64> = HashMap::new();
    let mut stripe = false;
    let _ = writeln!(s, "<g class=\"rows\">");
    for item in &lay.items {
        match item {
            Item::Group(addr) => {
                let _ = writeln!(
                    s,
                    "<text class=\"group\" x=\"{LABEL_X}\" y=\"{:.1}\">behind {}</text>",
                    y + GROUP_H - 4.0,
                    esc(&clip(addr, 40))
                );
                y += GROUP_H;
            }
            Item::Row { dev, depth } => {
                if stripe {
                    stripe_rect(&mut s, y);
                }
                stripe = !stripe;
                row_y.insert(*dev, y);
                device_row(
                    &mut s,
                    &axis,
                    &devs[*dev],
                    *depth,
                    y,
                    critical.contains(dev),
                );
                y += ROW_H;
            }
            Item::Fold {
                devs: members,
                depth,
            } => {
                if stripe {
                    stripe_rect(&mut s, y);
                }
                stripe = !stripe;
                fold_row(&mut s, &axis, devs, members, *depth, y);
                y += ROW_H;
            }
        }
    }
    let _ = writeln!(s, "</g>");

    // Bridges wait for the devices behind them: an arrow from the last of
    // them to the bridge's Begin.
    let _ = writeln!(s, "<g class=\"dependencies\">");
    let mut bridges: Vec<_> = lay.children.iter().collect();
    bridges.sort_by_key(|(p, _)| **p);
    for (p, kids) in bridges {
        let (Some(&py), Some(begin)) = (row_y.get(p), t(devs[*p].begin_sent_ms)) else {
            continue;
        };
        let last = kids
            .iter()
            .filter_map(|&k| Some((k, t(devs[k].done_ms)?, *row_y.get(&k)?)))
            .fold(None, |best: Option<(usize, f64, f64)>, c| match best {
                Some(b) if b.1 >= c.1 => Some(b),
                _ => Some(c),
            });
        if let Some((_, done, ky)) = last {
            let (x1, y1) = (axis.x(done), ky + ROW_H / 2.0);
            let (x2, y2) = (axis.x(begin), py + ROW_H / 2.0);
            let _ = writeln!(
                s,
                "<path class=\"dep\" d=\"M{x1:.1},{y1:.1} L{x1:.1},{:.1} L{x2:.1},{:.1} L{x2:.1},{y2:.1}\"/>",
                py + 2.0,
                py + 2.0
            );
        }
    }
    let _ = writeln!(s, "</g>");

    // Global deadline and when it was found passed.
    if show_deadline {
        let x = axis.x(report.deadline_at_ms);
        let _ = writeln!(
            s,
            "<line id=\"global-deadline\" class=\"global-deadline\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{chart_bottom}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#c0143c\">global deadline</text>",
            chart_top - 2.0,
            chart_top - 14.0
        );
    }
    if let Some(r) = t(report.deadline_reached_ms) {
        let x = axis.x(r);
        let _ = writeln!(
            s,
            "<line id=\"deadline-reached\" class=\"deadline-reached\" x1=\"{x:.1}\" y1=\"{chart_top}\" x2=\"{x:.1}\" y2=\"{chart_bottom}\"/>"
        );
    }

    legend(&mut s, chart_bottom + 8.0);
    s.push_str("</svg>\n");
    s
}

fn stripe_rect(s: &mut String, y: f64) {
    let _ = writeln!(
        s,
        "<rect class=\"stripe\" x=\"0\" y=\"{y:.1}\" width=\"{WIDTH}\" height=\"{ROW_H}\"/>"
    );
}

fn device_row(s: &mut String, axis: &Axis, d: &DeviceReport, depth: usize, y: f64, crit: bool) {
    let class = outcome_class(&d.outcome);
    let _ = writeln!(
        s,
        "<g class=\"device outcome-{class}{}\" data-address=\"{}\" data-outcome=\"{}\">",
        if crit { " critical" } else { "" },
        esc(&d.address),
        esc(&d.outcome)
    );
    let _ = writeln!(
        s,
        "<title>{} {} ({}): {}{}{}</title>",
        esc(&d.address),
        esc(&d.driver),
        esc(&d.protocol),
        esc(&d.outcome),
        match t(d.done_ms) {
            Some(v) => format!(" at {}", fmt_ms(v)),
            None => String::new(),
        },
        if d.detail.is_empty() {
            String::new()
        } else {
            format!(" — {}", esc(&d.detail))
        }
    );
    let mid = y + ROW_H / 2.0;
    let indent = 12.0 * depth.min(6) as f64;
    let prefix = if depth > 0 { "└ " } else { "" };
    let _ = writeln!(
        s,
        "<text class=\"mono{}\" x=\"{:.1}\" y=\"{:.1}\">{prefix}{} {}</text>",
        if crit { " crit-text" } else { "" },
        LABEL_X + indent,
        mid + 4.0,
        esc(&d.address),
        esc(&clip(&d.driver, 14))
    );

    let start = t(d.begin_sent_ms);
    let end = end_of(d);
    if let Some(b) = budget_end(d) {
        let a = t(d.begin_ack_ms).unwrap_or(0.0);
        let (x1, x2) = (axis.x(a), axis.x(b));
        let _ = writeln!(
            s,
            "<rect class=\"budget\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\"/>",
            mid - 6.0,
            (x2 - x1).max(0.5)
        );
    }
    if let (Some(a), Some(b)) = (start, end) {
        let (x1, x2) = (axis.x(a), axis.x(b.max(a)));
        let _ = writeln!(
            s,
            "<rect class=\"bar{}\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"10\"/>",
            if crit { " crit" } else { "" },
            mid - 5.0,
            (x2 - x1).max(3.0)
        );
    }
    if let (Some(a), Some(e)) = (start, t(d.elapsed_ms)) {
        let (x1, x2) = (axis.x(a), axis.x(a + e));
        let _ = writeln!(
            s,
            "<line class=\"measured\" x1=\"{x1:.1}\" y1=\"{:.1}\" x2=\"{x2:.1}\" y2=\"{:.1}\"/>",
            mid + 7.0,
            mid + 7.0
        );
    }
    if let Some(dl) = device_deadline(d) {
        let x = axis.x(dl);
        let _ = writeln!(
            s,
            "<path class=\"deadline\" d=\"M{:.1},{:.1} L{x:.1},{:.1} L{x:.1},{:.1} L{:.1},{:.1}\" fill=\"none\"/>",
            x - 3.0,
            mid - 7.0,
            mid - 7.0,
            mid + 7.0,
            x - 3.0,
            mid + 7.0
        );
    }
    if let Some(a) = start {
        let x = axis.x(a);
        let _ = writeln!(
            s,
            "<line class=\"mark-begin\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            mid - 7.0,
            mid + 7.0
        );
    }
    if let Some(v) = t(d.begin_ack_ms) {
        let _ = writeln!(
            s,
            "<circle class=\"mark-beginack\" cx=\"{:.1}\" cy=\"{mid:.1}\" r=\"2.6\"/>",
            axis.x(v)
        );
    }
    if let Some(v) = t(d.finish_sent_ms) {
        let x = axis.x(v);
        let _ = writeln!(
            s,
            "<path class=\"mark-finish\" d=\"M{x:.1},{:.1} L{:.1},{:.1} L{x:.1},{:.1} Z\"/>",
            mid - 9.0,
            x + 4.0,
            mid - 5.0,
            mid - 1.0
        );
    }
    if let Some(v) = t(d.finish_ack_ms) {
        let x = axis.x(v);
        let _ = writeln!(
            s,
            "<path class=\"mark-finishack\" d=\"M{x:.1},{:.1} L{:.1},{mid:.1} L{x:.1},{:.1} L{:.1},{mid:.1} Z\"/>",
            mid - 4.0,
            x + 4.0,
            mid + 4.0,
            x - 4.0
        );
    }
    // Why a device did not end clean, after the last thing drawn for it.
    if d.outcome != "clean" && !d.detail.is_empty() {
        let last = [end, device_deadline(d), budget_end(d), t(d.finish_ack_ms)]
            .into_iter()
            .flatten()
            .map(|v| axis.x(v))
            .fold(CHART_X0, f64::max);
        let x = last + 8.0;
        let room = ((CHART_X1 - x) / 5.6).floor();
        if room >= 12.0 {
            let _ = writeln!(
                s,
                "<text class=\"detail\" x=\"{x:.1}\" y=\"{:.1}\">{}</text>",
                mid + 3.5,
                esc(&clip(&d.detail, room as usize))
            );
        }
    }
    let right = match t(d.done_ms) {
        Some(v) => format!("{} {}", d.outcome, fmt_ms(v)),
        None => d.outcome.clone(),
    };
    let _ = writeln!(
        s,
        "<text class=\"mono{}\" x=\"{RIGHT_X}\" y=\"{:.1}\">{}</text>",
        if crit { " crit-text" } else { "" },
        mid + 4.0,
        esc(&clip(&right, 24))
    );
    s.push_str("</g>\n");
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn fold_row(
    s: &mut String,
    axis: &Axis,
    devs: &[DeviceReport],
    members: &[usize],
    depth: usize,
    y: f64,
) {
    let first = &devs[members[0]];
    let last = &devs[members[members.len() - 1]];
    let class = outcome_class(&first.outcome);
    let addresses: Vec<&str> = members.iter().map(|&i| devs[i].address.as_str()).collect();
    let starts: Vec<f64> = members
        .iter()
        .filter_map(|&i| t(devs[i].begin_sent_ms))
        .collect();
    let ends: Vec<f64> = members.iter().filter_map(|&i| end_of(&devs[i])).collect();
    let _ = writeln!(
        s,
        "<g class=\"fold outcome-{class}\" data-count=\"{}\" data-outcome=\"{}\" data-addresses=\"{}\">",
        members.len(),
        esc(&first.outcome),
        esc(&addresses.join(" "))
    );
    let _ = writeln!(
        s,
        "<title>{} × {} ({}): {} — {}</title>",
        members.len(),
        esc(&first.driver),
        esc(&first.protocol),
        esc(&first.outcome),
        esc(&addresses.join(", "))
    );
    let mid = y + ROW_H / 2.0;
    let indent = 12.0 * depth.min(6) as f64;
    let _ = writeln!(
        s,
        "<text class=\"mono\" x=\"{:.1}\" y=\"{:.1}\">{}{}…{} ×{} {}</text>",
        LABEL_X + indent,
        mid + 4.0,
        if depth > 0 { "└ " } else { "" },
        esc(&first.address),
        esc(last.address.rsplit(':').next().unwrap_or(&last.address)),
        members.len(),
        esc(&clip(&first.driver, 10))
    );
    let min_start = starts.iter().copied().fold(f64::INFINITY, f64::min);
    let max_end = ends.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min_end = ends.iter().copied().fold(f64::INFINITY, f64::min);
    if min_start.is_finite() && max_end.is_finite() {
        let (x1, x2) = (axis.x(min_start), axis.x(max_end.max(min_start)));
        let _ = writeln!(
            s,
            "<rect class=\"band\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\"/>",
            mid - 7.0,
            (x2 - x1).max(1.5)
        );
    }
    if let (Some(a), Some(b)) = (median(starts), median(ends.clone())) {
        let (x1, x2) = (axis.x(a), axis.x(b.max(a)));
        let _ = writeln!(
            s,
            "<rect class=\"bar\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"8\"/>",
            mid - 4.0,
            (x2 - x1).max(1.5)
        );
    }
    let right = if max_end.is_finite() {
        if (max_end - min_end).abs() < 0.05 {
            format!("{} {} {}", members.len(), first.outcome, fmt_ms(max_end))
        } else {
            format!(
                "{} {} {:.0}–{:.0} ms",
                members.len(),
                first.outcome,
                min_end,
                max_end
            )
        }
    } else {
        format!("{} {}", members.len(), first.outcome)
    };
    let _ = writeln!(
        s,
        "<text class=\"mono\" x=\"{RIGHT_X}\" y=\"{:.1}\">{}</text>",
        mid + 4.0,
        esc(&clip(&right, 24))
    );
    s.push_str("</g>\n");
}

fn legend(s: &mut String, top: f64) {
    let _ = writeln!(s, "<g class=\"legend\">");
    let _ = writeln!(
        s,
        "<line class=\"axis\" x1=\"{LABEL_X}\" y1=\"{top:.1}\" x2=\"{:.1}\" y2=\"{top:.1}\"/>",
        WIDTH - LABEL_X
    );
    // Outcomes.
    let y1 = top + 18.0;
    let mut x = LABEL_X;
    let _ = writeln!(
        s,
        "<text x=\"{x:.1}\" y=\"{:.1}\">outcome:</text>",
        y1 + 4.0
    );
    x += 58.0;
    for (o, _) in OUTCOMES {
        let _ = writeln!(
            s,
            "<rect class=\"swatch-{o}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"10\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{o}</text>",
            y1 - 4.0,
            x + 18.0,
            y1 + 4.0
        );
        x += 24.0 + 6.6 * o.len() as f64 + 10.0;
    }
    // Marks.
    let y2 = top + 40.0;
    let mut x = LABEL_X;
    let _ = writeln!(s, "<text x=\"{x:.1}\" y=\"{:.1}\">marks:</text>", y2 + 4.0);
    x += 58.0;
    let _ = writeln!(
        s,
        "<line class=\"mark-begin\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">Begin sent</text>",
        y2 - 7.0,
        y2 + 7.0,
        x + 6.0,
        y2 + 4.0
    );
    x += 80.0;
    let _ = writeln!(
        s,
        "<circle class=\"mark-beginack\" cx=\"{x:.1}\" cy=\"{y2:.1}\" r=\"2.6\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">BeginAck</text>",
        x + 6.0,
        y2 + 4.0
    );
    x += 72.0;
    let _ = writeln!(
        s,
        "<path class=\"mark-finish\" d=\"M{x:.1},{:.1} L{:.1},{:.1} L{x:.1},{:.1} Z\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">Finish sent</text>",
        y2 - 4.0,
        x + 4.0,
        y2,
        y2 + 4.0,
        x + 8.0,
        y2 + 4.0
    );
    x += 84.0;
    let _ = writeln!(
        s,
        "<path class=\"mark-finishack\" d=\"M{x:.1},{:.1} L{:.1},{y2:.1} L{x:.1},{:.1} L{:.1},{y2:.1} Z\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">FinishAck</text>",
        y2 - 4.0,
        x + 4.0,
        y2 + 4.0,
        x - 4.0,
        x + 8.0,
        y2 + 4.0
    );
    x += 80.0;
    let _ = writeln!(
        s,
        "<rect class=\"budget\" x=\"{x:.1}\" y=\"{:.1}\" width=\"24\" height=\"12\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">budget from BeginAck</text>",
        y2 - 6.0,
        x + 30.0,
        y2 + 4.0
    );
    x += 160.0;
    let _ = writeln!(
        s,
        "<line class=\"measured\" x1=\"{x:.1}\" y1=\"{y2:.1}\" x2=\"{:.1}\" y2=\"{y2:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">time the driver measured</text>",
        x + 24.0,
        x + 30.0,
        y2 + 4.0
    );
    x += 180.0;
    let _ = writeln!(
        s,
        "<path class=\"deadline\" fill=\"none\" d=\"M{:.1},{:.1} L{x:.1},{:.1} L{x:.1},{:.1} L{:.1},{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">device deadline</text>",
        x - 3.0,
        y2 - 7.0,
        y2 - 7.0,
        y2 + 7.0,
        x - 3.0,
        y2 + 7.0,
        x + 6.0,
        y2 + 4.0
    );
    // Lines.
    let y3 = top + 62.0;
    let mut x = LABEL_X + 58.0;
    let _ = writeln!(
        s,
        "<line class=\"global-deadline\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">global deadline</text>",
        y3 - 7.0,
        y3 + 7.0,
        x + 6.0,
        y3 + 4.0
    );
    x += 110.0;
    let _ = writeln!(
        s,
        "<line class=\"deadline-reached\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">deadline found passed</text>",
        y3 - 7.0,
        y3 + 7.0,
        x + 6.0,
        y3 + 4.0
    );
    x += 150.0;
    let _ = writeln!(
        s,
        "<rect class=\"bar crit swatch-clean\" x=\"{x:.1}\" y=\"{:.1}\" width=\"24\" height=\"10\"/>\
         <text class=\"crit-text\" x=\"{:.1}\" y=\"{:.1}\">critical path</text>",
        y3 - 5.0,
        x + 30.0,
        y3 + 4.0
    );
    x += 120.0;
    let _ = writeln!(
        s,
        "<path class=\"dep\" d=\"M{x:.1},{:.1} L{x:.1},{y3:.1} L{:.1},{y3:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">bridge waits for the devices behind it</text>",
        y3 - 7.0,
        x + 20.0,
        x + 26.0,
        y3 + 4.0
    );
    x += 260.0;
    let _ = writeln!(
        s,
        "<rect class=\"swatch-clean\" fill-opacity=\"0.35\" x=\"{x:.1}\" y=\"{:.1}\" width=\"24\" height=\"12\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\">folded: spread, median</text>",
        y3 - 6.0,
        x + 30.0,
        y3 + 4.0
    );
    let _ = writeln!(
        s,
        "<text class=\"tick\" x=\"{LABEL_X}\" y=\"{:.1}\">times in ms from the first Begin; bar: Begin sent to outcome</text>",
        top + 84.0
    );
    s.push_str("</g>\n");
}

#[cfg(test)]
mod tests;
