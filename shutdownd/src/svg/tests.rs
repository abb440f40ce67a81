use super::*;

use std::process::Command;

/// A report like the simulated machine's: devices `0000:BB:DD.0` behind
/// root ports `0000:00:1k.0` (32 per port), two-phase, `latency` ms each.
pub(crate) fn sample(n: usize, latency: f64) -> Report {
    // Times in whole microseconds, as the scheduler records them.
    let us = |ms: f64| (ms * 1000.0).round() / 1000.0;
    let devices = (0..n)
        .map(|i| {
            let ack = us(0.4 + 0.01 * i as f64);
            DeviceReport {
                address: format!("0000:{:02x}:{:02x}.0", i / 32 + 1, i % 32),
                parent: Some(format!("0000:00:{:02x}.0", 0x10 + i / 32)),
                driver: "nvmed".into(),
                protocol: "two-phase".into(),
                budget_ms: Some(latency),
                begin_sent_ms: Some(us(0.01 * i as f64)),
                begin_ack_ms: Some(ack),
                finish_sent_ms: Some(us(ack + 0.05)),
                finish_deadline_ms: Some(latency * 1.5 + 500.0),
                finish_ack_ms: Some(us(latency + 1.0 + 0.02 * i as f64)),
                elapsed_ms: Some(us(latency + 0.3)),
                done_ms: Some(us(latency + 1.0 + 0.02 * i as f64)),
                outcome: "clean".into(),
                detail: "CSTS.SHST=10b".into(),
            }
        })
        .collect::<Vec<_>>();
    let total = devices.iter().filter_map(|d| d.done_ms).fold(0.0, f64::max);
    Report {
        mode: "two-phase".into(),
        kind: "poweroff".into(),
        total_ms: total,
        global_deadline_ms: 120_000.0,
        deadline_at_ms: 119_990.0,
        deadline_reached_ms: None,
        cycles: Vec::new(),
        devices,
    }
}

struct Rows {
    /// (address, outcome class, critical) of each device row, top to bottom.
    devices: Vec<(String, String, bool)>,
    /// (count, outcome class, addresses) of each folded row.
    folds: Vec<(usize, String, Vec<String>)>,
}

fn class_of(node: &roxmltree::Node, prefix: &str) -> Option<String> {
    node.attribute("class")?
        .split_whitespace()
        .find_map(|c| c.strip_prefix(prefix))
        .map(str::to_string)
}

/// Parses the SVG as XML (failing the test if it is not) and collects rows.
fn rows(svg: &str) -> Rows {
    let doc = roxmltree::Document::parse(svg).expect("the SVG is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let has = |n: &roxmltree::Node, c: &str| {
        n.attribute("class")
            .is_some_and(|a| a.split_whitespace().any(|x| x == c))
    };
    let mut r = Rows {
        devices: Vec::new(),
        folds: Vec::new(),
    };
    for n in root.descendants().filter(|n| n.tag_name().name() == "g") {
        if has(&n, "device") {
            r.devices.push((
                n.attribute("data-address").unwrap().to_string(),
                class_of(&n, "outcome-").unwrap(),
                has(&n, "critical"),
            ));
        } else if has(&n, "fold") {
            let addrs: Vec<String> = n
                .attribute("data-addresses")
                .unwrap()
                .split(' ')
                .map(str::to_string)
                .collect();
            let count: usize = n.attribute("data-count").unwrap().parse().unwrap();
            assert_eq!(count, addrs.len());
            r.folds
                .push((count, class_of(&n, "outcome-").unwrap(), addrs));
        }
    }
    r
}

#[test]
fn sixteen_devices_one_row_each_with_its_outcome() {
    let mut report = sample(16, 4500.0);
    report.devices[3].outcome = "timed-out".into();
    report.devices[5].outcome = "no-response".into();
    report.devices[7].outcome = "driver-died".into();
    let svg = render(&report, &SvgOptions::default());
    let r = rows(&svg);
    assert!(r.folds.is_empty(), "16 devices are not folded");
    assert_eq!(r.devices.len(), 16);
    for (d, (addr, class, _)) in report.devices.iter().zip(&r.devices) {
        assert_eq!(&d.address, addr);
        assert_eq!(&d.outcome, class);
    }
    // The last to finish is the critical path, and named in the header.
    let crit: Vec<_> = r.devices.iter().filter(|d| d.2).collect();
    assert_eq!(crit.len(), 1);
    assert_eq!(crit[0].0, "0000:01:0f.0");
    assert!(svg.contains("critical path: 0000:01:0f.0 nvmed"));
    assert!(svg.contains("behind 0000:00:10.0"));
    // The global deadline is far beyond the last event: said, not drawn.
    assert!(svg.contains("beyond the right edge"));
    assert!(!svg.contains("id=\"global-deadline\""));
}

#[test]
fn a_near_global_deadline_is_drawn_and_its_passing_marked() {
    let mut report = sample(4, 300.0);
    report.deadline_at_ms = 900.0;
    report.deadline_reached_ms = Some(900.5);
    report.devices[0].outcome = "no-response".into();
    report.devices[0].done_ms = Some(900.5);
    let svg = render(&report, &SvgOptions::default());
    assert!(svg.contains("id=\"global-deadline\""));
    assert!(svg.contains("id=\"deadline-reached\""));
    assert!(svg.contains("found passed at 900.5 ms"));
    let r = rows(&svg);
    assert_eq!(r.devices.iter().filter(|d| d.2).count(), 1);
    assert!(
        r.devices[0].2,
        "the device that ran into the deadline is critical"
    );
}

#[test]
fn many_devices_fold_but_every_device_is_accounted_for_and_failures_stand_out() {
    let mut report = sample(256, 4500.0);
    for i in [17, 100, 200] {
        report.devices[i].outcome = "failed".into();
    }
    let svg = render(&report, &SvgOptions::default());
    let r = rows(&svg);
    let mut seen: Vec<String> = r.devices.iter().map(|d| d.0.clone()).collect();
    for (_, class, addrs) in &r.folds {
        assert_eq!(class, "clean", "only successes fold");
        seen.extend(addrs.iter().cloned());
    }
    seen.sort();
    let mut all: Vec<String> = report.devices.iter().map(|d| d.address.clone()).collect();
    all.sort();
    assert_eq!(seen, all, "each device exactly once");
    for i in [17, 100, 200] {
        let addr = &report.devices[i].address;
        assert!(
            r.devices.iter().any(|d| &d.0 == addr && d.1 == "failed"),
            "{addr} keeps its own row"
        );
    }
    let rows_drawn = r.devices.len() + r.folds.len();
    assert!(rows_drawn <= 40, "{rows_drawn} rows for 256 devices");
    // The critical device keeps its own row.
    assert!(r.devices.iter().any(|d| d.2 && d.0 == "0000:08:1f.0"));
    // Unfolded, it is one row per device.
    let all_rows = rows(&render(
        &report,
        &SvgOptions {
            fold_above: usize::MAX,
        },
    ));
    assert_eq!(all_rows.devices.len(), 256);
    assert!(all_rows.folds.is_empty());
}

#[test]
fn a_bridge_comes_after_the_devices_behind_it_and_waits_for_them() {
    let mut report = sample(3, 100.0);
    // Device 3: the bridge the three sit behind, begun after they finished.
    report.devices.push(DeviceReport {
        address: "0000:00:10.0".into(),
        parent: None,
        driver: "faultyd".into(),
        begin_sent_ms: Some(101.2),
        begin_ack_ms: Some(101.5),
        finish_sent_ms: Some(101.6),
        finish_ack_ms: Some(151.0),
        done_ms: Some(151.0),
        budget_ms: Some(50.0),
        finish_deadline_ms: Some(1000.0),
        elapsed_ms: Some(49.0),
        ..report.devices[0].clone()
    });
    // pcid lists the bridge first; the picture puts it after its children.
    report.devices.rotate_right(1);
    report.total_ms = 151.0;
    let svg = render(&report, &SvgOptions::default());
    let r = rows(&svg);
    let order: Vec<&str> = r.devices.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(
        order,
        [
            "0000:01:00.0",
            "0000:01:01.0",
            "0000:01:02.0",
            "0000:00:10.0"
        ]
    );
    // Critical path: the bridge, then the child it waited for (the last one).
    assert!(svg.contains("critical path: 0000:00:10.0 faultyd"));
    assert!(svg.contains("after 0000:01:02.0 nvmed"));
    let crit: Vec<&str> = r
        .devices
        .iter()
        .filter(|d| d.2)
        .map(|d| d.0.as_str())
        .collect();
    assert_eq!(crit, ["0000:01:02.0", "0000:00:10.0"]);
    assert!(svg.contains("<path class=\"dep\" d=\"M"));
    assert!(!svg.contains("behind 0000:00:10.0"), "the bridge has a row");
}

#[test]
fn hostile_text_and_numbers_still_make_a_valid_picture() {
    let mut report = sample(5, 10.0);
    report.devices[0].driver = "<script>&\"'\u{1}".into();
    report.devices[0].detail = "]]> <!-- \u{0} & more".into();
    report.devices[0].address = "x\"><g class=\"device".into();
    report.devices[1].begin_sent_ms = Some(-5.0);
    report.devices[1].done_ms = Some(1e300);
    report.devices[2].elapsed_ms = Some(f64::MAX);
    report.devices[3].outcome = "exploded".into();
    report.devices[4].parent = Some(report.devices[4].address.clone());
    report.mode = "<m>".into();
    report.total_ms = -1.0;
    report.deadline_at_ms = f64::NAN;
    let svg = render(&report, &SvgOptions::default());
    let r = rows(&svg);
    assert_eq!(r.devices.len(), 5);
    assert_eq!(r.devices[0].0, "x\"><g class=\"device");
    assert_eq!(r.devices[3].1, "other");
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
}

#[test]
fn parent_cycles_and_empty_reports_draw() {
    let mut report = sample(3, 10.0);
    report.devices[0].parent = Some(report.devices[1].address.clone());
    report.devices[1].parent = Some(report.devices[0].address.clone());
    let r = rows(&render(&report, &SvgOptions::default()));
    assert_eq!(r.devices.len(), 3);

    report.devices.clear();
    report.total_ms = 0.0;
    let svg = render(&report, &SvgOptions::default());
    let r = rows(&svg);
    assert!(r.devices.is_empty() && r.folds.is_empty());
    assert!(svg.contains("critical path: none"));
}

#[test]
fn the_json_report_reads_back_and_old_reports_without_parent_read() {
    let report = sample(3, 100.0);
    let json = report.to_json().unwrap();
    assert_eq!(Report::from_json(&json).unwrap(), report);
    let old = r#"{"mode":"two-phase","kind":"poweroff","total_ms":1.5,
        "global_deadline_ms":120000.0,"deadline_at_ms":119999.0,"deadline_reached_ms":null,
        "devices":[{"address":"0000:00:04.0","driver":"nvmed","protocol":"two-phase",
        "budget_ms":null,"begin_sent_ms":0.0,"begin_ack_ms":0.4,"finish_sent_ms":0.4,
        "finish_deadline_ms":1000.0,"finish_ack_ms":1.5,"elapsed_ms":1.0,"done_ms":1.5,
        "outcome":"clean","detail":"","future_field":[1,2]}]}"#;
    let r = Report::from_json(old).unwrap();
    assert_eq!(r.devices[0].parent, None);
    assert!(r.cycles.is_empty());
    assert!(Report::from_json("{\"mode\": 1}").is_err());
}

/// Renders with librsvg's `rsvg-convert` (Debian's librsvg2-bin, installed
/// by `tests/setup.sh`): the renderer must accept the picture and produce a
/// PNG of the size the SVG declares.
fn render_png(svg: &str, name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(format!("{name}.svg"));
    let output = dir.path().join(format!("{name}.png"));
    std::fs::write(&input, svg).unwrap();
    let out = Command::new("rsvg-convert")
        .arg("--format=png")
        .arg("--output")
        .arg(&output)
        .arg(&input)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run rsvg-convert ({e}); install librsvg2-bin: tests/setup.sh --svg")
        });
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "rsvg-convert failed on {name}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&output).unwrap()
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

fn declared_size(svg: &str) -> (u32, u32) {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let root = doc.root_element();
    let num = |a: &str| root.attribute(a).unwrap().parse::<f64>().unwrap().ceil() as u32;
    (num("width"), num("height"))
}

#[test]
fn a_real_renderer_draws_small_large_and_faulty_reports() {
    let mut faulty = sample(10, 300.0);
    faulty.devices[0].outcome = "timed-out".into();
    faulty.devices[1].outcome = "failed".into();
    faulty.devices[2].outcome = "driver-died".into();
    faulty.devices[2].finish_ack_ms = None;
    faulty.devices[3].outcome = "not-supported".into();
    faulty.devices[3].begin_sent_ms = None;
    faulty.deadline_at_ms = 1000.0;
    for (name, report) in [
        ("sixteen", sample(16, 4500.0)),
        ("many", sample(256, 4500.0)),
        ("faulty", faulty),
    ] {
        let svg = render(&report, &SvgOptions::default());
        let png = render_png(&svg, name);
        assert_eq!(png_size(&png), declared_size(&svg), "{name}");
    }
}
