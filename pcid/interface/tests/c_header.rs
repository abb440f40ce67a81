//! The C header `include/pcid_shutdown.h`, `PROTOCOL.md` and this crate say
//! the same thing: every constant of the header is checked against the
//! document's tables and against what the Rust encoder writes, and every
//! message type and enumeration value the document lists has its constant.
//! The header also compiles on its own as C99 with every warning an error,
//! and its header helpers produce and check the bytes the Rust code does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pcid_interface::function::{Bar, BarKind};
use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};
use pcid_interface::protocol::{
    ControlMessage, DeviceErrorKind, DeviceInfo, DriverMessage, DriverState, FinishOutcome,
    ShutdownKind, ShutdownSupport, PROTOCOL_VERSION,
};
use pcid_interface::wire::{self, msg_type, WireMessage};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `#define NAME VALUE` lines of the header: integers (decimal or hex) and
/// string literals (kept with their quotes).
fn defines() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("include/pcid_shutdown.h")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("#define "))
        .filter_map(|rest| {
            let mut it = rest.splitn(2, char::is_whitespace);
            let name = it.next()?;
            let value = it.next()?.split("/*").next()?.trim();
            (!value.is_empty()).then(|| (name.to_string(), value.to_string()))
        })
        .collect()
}

fn int(defs: &BTreeMap<String, String>, name: &str) -> u64 {
    let v = defs
        .get(name)
        .unwrap_or_else(|| panic!("pcid_shutdown.h defines no {name}"));
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    }
    .unwrap_or_else(|_| panic!("{name} = {v} is not an integer"))
}

fn protocol_md() -> String {
    std::fs::read_to_string(root().join("PROTOCOL.md")).unwrap()
}

/// The cells of the Markdown table rows in `section` of PROTOCOL.md (from
/// its heading to the next heading of any level).
fn table_rows(doc: &str, section: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(section)
        .unwrap_or_else(|| panic!("PROTOCOL.md has no section {section}"));
    let body = &doc[start + section.len()..];
    let end = body.find("\n#").unwrap_or(body.len());
    body[..end]
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|--") && !l.starts_with("|-"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The C macro name PROTOCOL.md's message name maps to.
fn c_name(name: &str, channel: &str) -> String {
    let mut snake = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_uppercase());
    }
    match channel {
        "driver" | "participant" => format!("PCID_MSG_{snake}"),
        _ => format!("PCID_CTL_{snake}"),
    }
}

#[test]
fn message_types_match_the_document_and_the_rust_codes() {
    let defs = defines();
    let doc = protocol_md();
    let rows = table_rows(&doc, "## 3. Message types");
    let mut seen = 0;
    for row in rows.iter().filter(|r| r[0].starts_with("0x")) {
        let code = u64::from_str_radix(row[0].trim_start_matches("0x"), 16).unwrap();
        let name = c_name(&row[1], &row[2]);
        assert_eq!(int(&defs, &name), code, "{name} vs PROTOCOL.md §3");
        seen += 1;
    }
    assert_eq!(seen, 28, "PROTOCOL.md §3 lists 28 message types");
    let rust: [(&str, u8); 28] = [
        ("PCID_MSG_HELLO", msg_type::HELLO),
        ("PCID_MSG_WELCOME", msg_type::WELCOME),
        ("PCID_MSG_READY", msg_type::READY),
        ("PCID_MSG_BEGIN", msg_type::BEGIN),
        ("PCID_MSG_BEGIN_ACK", msg_type::BEGIN_ACK),
        ("PCID_MSG_FINISH", msg_type::FINISH),
        ("PCID_MSG_SHUTDOWN", msg_type::SHUTDOWN),
        ("PCID_MSG_FINISH_ACK", msg_type::FINISH_ACK),
        ("PCID_MSG_ERROR", msg_type::ERROR),
        ("PCID_MSG_REGISTER", msg_type::REGISTER),
        ("PCID_MSG_REGISTERED", msg_type::REGISTERED),
        ("PCID_CTL_LIST_DEVICES", msg_type::CTL_LIST_DEVICES),
        ("PCID_CTL_DEVICES", msg_type::CTL_DEVICES),
        ("PCID_CTL_BEGIN", msg_type::CTL_BEGIN),
        ("PCID_CTL_FINISH", msg_type::CTL_FINISH),
        ("PCID_CTL_SHUTDOWN", msg_type::CTL_SHUTDOWN),
        ("PCID_CTL_BEGIN_ACK", msg_type::CTL_BEGIN_ACK),
        ("PCID_CTL_FINISH_ACK", msg_type::CTL_FINISH_ACK),
        ("PCID_CTL_DEVICE_ERROR", msg_type::CTL_DEVICE_ERROR),
        ("PCID_CTL_ERROR", msg_type::CTL_ERROR),
        (
            "PCID_CTL_LIST_PARTICIPANTS",
            msg_type::CTL_LIST_PARTICIPANTS,
        ),
        ("PCID_CTL_PARTICIPANTS", msg_type::CTL_PARTICIPANTS),
        (
            "PCID_CTL_PARTICIPANT_BEGIN",
            msg_type::CTL_PARTICIPANT_BEGIN,
        ),
        (
            "PCID_CTL_PARTICIPANT_FINISH",
            msg_type::CTL_PARTICIPANT_FINISH,
        ),
        (
            "PCID_CTL_PARTICIPANT_SHUTDOWN",
            msg_type::CTL_PARTICIPANT_SHUTDOWN,
        ),
        (
            "PCID_CTL_PARTICIPANT_BEGIN_ACK",
            msg_type::CTL_PARTICIPANT_BEGIN_ACK,
        ),
        (
            "PCID_CTL_PARTICIPANT_FINISH_ACK",
            msg_type::CTL_PARTICIPANT_FINISH_ACK,
        ),
        (
            "PCID_CTL_PARTICIPANT_ERROR",
            msg_type::CTL_PARTICIPANT_ERROR,
        ),
    ];
    for (name, code) in rust {
        assert_eq!(int(&defs, name), u64::from(code), "{name} vs the Rust code");
    }
}

fn address() -> PciAddress {
    PciAddress {
        segment: 0,
        bus: 0,
        device: 4,
        function: 0,
    }
}

/// The byte the Rust encoder writes at `payload[at]` of `frame`.
fn payload_byte(frame: &[u8], at: usize) -> u64 {
    u64::from(frame[wire::HEADER_LEN + at])
}

#[test]
fn enumerations_match_the_document_and_the_rust_encoder() {
    let defs = defines();
    let doc = protocol_md();
    // §2.2 rows: | `kind` (shutdown kind) | 1 = poweroff, 2 = reboot |
    let prefix = |enumeration: &str| match enumeration {
        "kind" => "PCID_KIND_",
        "support" => "PCID_SUPPORT_",
        "outcome" => "PCID_OUTCOME_",
        "state" => "PCID_STATE_",
        "error_kind" => "PCID_ERROR_",
        "backend" => "PCID_BACKEND_",
        "bar_kind" => "PCID_BAR_",
        other => panic!("PROTOCOL.md §2.2 has an enumeration the header lacks: {other}"),
    };
    let bar_name = |words: &str| match words {
        "32-bit memory" => "MEM32".to_string(),
        "32-bit prefetchable memory" => "MEM32_PREFETCHABLE".to_string(),
        "64-bit memory" => "MEM64".to_string(),
        "64-bit prefetchable memory" => "MEM64_PREFETCHABLE".to_string(),
        "I/O" => "IO".to_string(),
        other => panic!("unknown BAR kind {other}"),
    };
    let mut checked = 0;
    for row in table_rows(&doc, "### 2.2 Enumerations") {
        let Some(enumeration) = row[0].split('`').nth(1) else {
            continue;
        };
        let prefix = prefix(enumeration);
        for value in row[1].split(", ") {
            let (num, words) = value.split_once(" = ").unwrap();
            // "abrupt (normal shutdown did not complete; …)" -> "abrupt"
            let words = words.split(" (").next().unwrap();
            let suffix = if enumeration == "bar_kind" {
                bar_name(words)
            } else {
                words.replace('-', "_").to_ascii_uppercase()
            };
            let name = format!("{prefix}{suffix}");
            assert_eq!(int(&defs, &name), num.parse().unwrap(), "{name} vs §2.2");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 + 3 + 4 + 3 + 5 + 3 + 5, "values in §2.2");

    // The Rust encoder writes the same values.
    for (kind, name) in [
        (ShutdownKind::Poweroff, "PCID_KIND_POWEROFF"),
        (ShutdownKind::Reboot, "PCID_KIND_REBOOT"),
    ] {
        let f = DriverMessage::Begin {
            seq: 1,
            kind,
            deadline: Duration::ZERO,
        }
        .encode()
        .unwrap();
        assert_eq!(payload_byte(&f, 0), int(&defs, name), "{name}");
    }
    for (support, name) in [
        (ShutdownSupport::None, "PCID_SUPPORT_NONE"),
        (ShutdownSupport::OnePhase, "PCID_SUPPORT_ONE_PHASE"),
        (ShutdownSupport::TwoPhase, "PCID_SUPPORT_TWO_PHASE"),
    ] {
        let f = DriverMessage::Hello {
            version: 1,
            support,
            driver: "d".into(),
        }
        .encode()
        .unwrap();
        assert_eq!(payload_byte(&f, 2), int(&defs, name), "{name}");
    }
    for (outcome, name) in [
        (FinishOutcome::Clean, "PCID_OUTCOME_CLEAN"),
        (FinishOutcome::Abrupt, "PCID_OUTCOME_ABRUPT"),
        (FinishOutcome::TimedOut, "PCID_OUTCOME_TIMED_OUT"),
        (FinishOutcome::Failed, "PCID_OUTCOME_FAILED"),
    ] {
        let f = DriverMessage::FinishAck {
            seq: 1,
            outcome,
            elapsed: Duration::ZERO,
            detail: String::new(),
        }
        .encode()
        .unwrap();
        assert_eq!(payload_byte(&f, 0), int(&defs, name), "{name}");
    }
    for (state, name) in [
        (DriverState::Starting, "PCID_STATE_STARTING"),
        (DriverState::Running, "PCID_STATE_RUNNING"),
        (DriverState::Gone, "PCID_STATE_GONE"),
    ] {
        let f = ControlMessage::Devices {
            id: 1,
            devices: vec![DeviceInfo {
                address: address(),
                parent: None,
                driver: "d".into(),
                support: ShutdownSupport::None,
                pid: 0,
                state,
            }],
        }
        .encode()
        .unwrap();
        // u16 count, address (5), opt_address (1), support (1), pid (4), state.
        assert_eq!(
            payload_byte(&f, 2 + 5 + 1 + 1 + 4),
            int(&defs, name),
            "{name}"
        );
    }
    for (kind, name) in [
        (DeviceErrorKind::UnknownDevice, "PCID_ERROR_UNKNOWN_DEVICE"),
        (DeviceErrorKind::DriverDied, "PCID_ERROR_DRIVER_DIED"),
        (
            DeviceErrorKind::ProtocolViolation,
            "PCID_ERROR_PROTOCOL_VIOLATION",
        ),
        (DeviceErrorKind::NotSupported, "PCID_ERROR_NOT_SUPPORTED"),
        (DeviceErrorKind::Busy, "PCID_ERROR_BUSY"),
    ] {
        let f = ControlMessage::DeviceError {
            id: 1,
            address: address(),
            kind,
            message: String::new(),
        }
        .encode()
        .unwrap();
        assert_eq!(payload_byte(&f, 5), int(&defs, name), "{name}");
    }
    let welcome = |backend: FunctionBackend| {
        DriverMessage::Welcome {
            version: PROTOCOL_VERSION,
            function: PciFunction {
                address: address(),
                vendor: 0,
                device: 0,
                class: 0,
                subclass: 0,
                interface: 0,
                revision: 0,
                parent: None,
                backend,
            },
        }
        .encode()
        .unwrap()
    };
    // u16 version, address (5), ids (4), class bytes (4), opt_address (1).
    let backend_at = 2 + 5 + 4 + 4 + 1;
    for (backend, name) in [
        (FunctionBackend::Simulated, "PCID_BACKEND_SIMULATED"),
        (
            FunctionBackend::LinuxSysfs {
                sysfs_path: "/sys".into(),
            },
            "PCID_BACKEND_LINUX_SYSFS",
        ),
        (
            FunctionBackend::Redox {
                bars: Vec::new(),
                legacy_irq: None,
            },
            "PCID_BACKEND_REDOX",
        ),
    ] {
        let f = welcome(backend);
        assert_eq!(payload_byte(&f, backend_at), int(&defs, name), "{name}");
    }
    for (kind, name) in [
        (
            BarKind::Memory32 {
                prefetchable: false,
            },
            "PCID_BAR_MEM32",
        ),
        (
            BarKind::Memory32 { prefetchable: true },
            "PCID_BAR_MEM32_PREFETCHABLE",
        ),
        (
            BarKind::Memory64 {
                prefetchable: false,
            },
            "PCID_BAR_MEM64",
        ),
        (
            BarKind::Memory64 { prefetchable: true },
            "PCID_BAR_MEM64_PREFETCHABLE",
        ),
        (BarKind::Io, "PCID_BAR_IO"),
    ] {
        let f = welcome(FunctionBackend::Redox {
            bars: vec![Bar {
                index: 0,
                kind,
                address: 0x1000,
                size: 0x1000,
            }],
            legacy_irq: None,
        });
        // backend, BAR count, slot, kind.
        assert_eq!(payload_byte(&f, backend_at + 3), int(&defs, name), "{name}");
    }
}

#[test]
fn header_layout_limits_and_sizes_match_the_document_and_the_rust_code() {
    let defs = defines();
    let doc = protocol_md();
    assert_eq!(defs["PCID_MAGIC"], "\"PCID\"");
    assert_eq!(wire::MAGIC, *b"PCID");
    assert_eq!(int(&defs, "PCID_MAGIC_LEN"), 4);
    for (name, rust) in [
        ("PCID_WIRE_VERSION", u64::from(wire::WIRE_VERSION)),
        ("PCID_PROTOCOL_VERSION", u64::from(PROTOCOL_VERSION)),
        ("PCID_HEADER_LEN", wire::HEADER_LEN as u64),
        ("PCID_MAX_FRAME_LEN", wire::MAX_FRAME_LEN as u64),
        ("PCID_MAX_PAYLOAD_LEN", wire::MAX_PAYLOAD_LEN as u64),
        ("PCID_MAX_NAME_LEN", wire::MAX_NAME_LEN as u64),
        ("PCID_MAX_TEXT_LEN", wire::MAX_TEXT_LEN as u64),
        ("PCID_MAX_PATH_LEN", wire::MAX_PATH_LEN as u64),
    ] {
        assert_eq!(int(&defs, name), rust, "{name} vs the Rust code");
    }
    assert_eq!(
        defs["PCID_CLIENT_CHANNEL_ENV"],
        format!("\"{}\"", pcid_interface::PCID_CLIENT_CHANNEL)
    );

    // §2.3's header table: offset, size, field.
    let mut fields = BTreeMap::new();
    for row in table_rows(&doc, "### 2.3 Frame") {
        if let Ok(offset) = row[0].parse::<u64>() {
            fields.insert(row[2].clone(), offset);
        }
    }
    for (field, name) in [
        ("magic", "PCID_HDR_MAGIC"),
        ("version", "PCID_HDR_VERSION"),
        ("type", "PCID_HDR_TYPE"),
        ("flags", "PCID_HDR_FLAGS"),
        ("seq", "PCID_HDR_SEQ"),
        ("length", "PCID_HDR_LENGTH"),
    ] {
        assert_eq!(Some(&int(&defs, name)), fields.get(field), "{name} vs §2.3");
    }
    assert_eq!(fields.get("payload"), Some(&int(&defs, "PCID_HEADER_LEN")));
    assert!(doc.contains("**≤ 65520**") && doc.contains("maximum frame size** is 65536"));
    assert_eq!(int(&defs, "PCID_MAX_PAYLOAD_LEN"), 65520);
    assert_eq!(int(&defs, "PCID_MAX_FRAME_LEN"), 65536);

    // §2.1 string limits.
    for row in table_rows(&doc, "String limits:") {
        let (Some(limit), Ok(bytes)) = (row[0].split('`').nth(1), row[1].parse::<u64>()) else {
            continue;
        };
        let name = format!("PCID_MAX_{limit}_LEN");
        assert_eq!(int(&defs, &name), bytes, "{name} vs §2.1");
    }
    // §2.1 primitive sizes.
    assert_eq!(int(&defs, "PCID_DURATION_LEN"), 8);
    assert_eq!(int(&defs, "PCID_ADDRESS_LEN"), 5);

    // §4 payload sizes, against the document and the encoder.
    let sizes: BTreeMap<String, String> = table_rows(&doc, "## 4. Driver channel payloads")
        .into_iter()
        .filter(|r| r.len() == 3)
        .map(|r| (r[0].clone(), r[2].clone()))
        .collect();
    let d = Duration::from_millis(1);
    for (msg, name, frame) in [
        (
            "Begin",
            "PCID_BEGIN_LEN",
            DriverMessage::Begin {
                seq: 1,
                kind: ShutdownKind::Poweroff,
                deadline: d,
            },
        ),
        (
            "BeginAck",
            "PCID_BEGIN_ACK_LEN",
            DriverMessage::BeginAck { seq: 1, budget: d },
        ),
        (
            "Finish",
            "PCID_FINISH_LEN",
            DriverMessage::Finish {
                seq: 1,
                deadline: d,
            },
        ),
        (
            "Shutdown",
            "PCID_SHUTDOWN_LEN",
            DriverMessage::Shutdown {
                seq: 1,
                kind: ShutdownKind::Reboot,
                deadline: d,
            },
        ),
        ("Ready", "PCID_READY_LEN", DriverMessage::Ready),
        (
            "Hello",
            "PCID_HELLO_MIN_LEN",
            DriverMessage::Hello {
                version: 1,
                support: ShutdownSupport::TwoPhase,
                driver: String::new(),
            },
        ),
        (
            "FinishAck",
            "PCID_FINISH_ACK_MIN_LEN",
            DriverMessage::FinishAck {
                seq: 1,
                outcome: FinishOutcome::Clean,
                elapsed: d,
                detail: String::new(),
            },
        ),
        (
            "Error",
            "PCID_ERROR_MIN_LEN",
            DriverMessage::Error {
                seq: 1,
                message: String::new(),
            },
        ),
    ] {
        let want = int(&defs, name);
        let documented = sizes
            .get(msg)
            .unwrap_or_else(|| panic!("§4 lists no {msg}"));
        let fixed = documented.split(" + ").next().unwrap();
        let fixed: u64 = fixed.parse().unwrap();
        assert_eq!(want, fixed, "{name} vs §4 ({documented})");
        let encoded = frame.encode().unwrap();
        assert_eq!(
            (encoded.len() - wire::HEADER_LEN) as u64,
            want,
            "{name} vs the encoder"
        );
    }
}

fn compile(src: &Path, out: &Path) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args([
            "-std=c99",
            "-D_POSIX_C_SOURCE=200809L",
            "-Wall",
            "-Wextra",
            "-Wconversion",
            "-pedantic",
            "-Werror",
            "-O1",
        ])
        .arg("-I")
        .arg(root().join("include"))
        .arg("-o")
        .arg(out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} (set CC): {e}"));
    assert!(status.success(), "compiling {} failed", src.display());
}

/// The header's helpers, compiled and run: `pcid_put_header` writes what the
/// Rust encoder writes, and `pcid_parse_header` accepts and refuses headers as
/// §2.3 says, in its order.
#[test]
fn the_header_helpers_write_and_check_what_the_rust_code_does() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("header_check.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include "pcid_shutdown.h"

int main(void) {
    uint8_t h[PCID_HEADER_LEN];
    struct pcid_header p;
    pcid_put_header(h, PCID_MSG_BEGIN, 7, PCID_BEGIN_LEN);
    for (int i = 0; i < PCID_HEADER_LEN; i++) printf("%02x", h[i]);
    printf(" %d", (int)pcid_parse_header(h, &p));
    printf(" %u %u %u %u", p.type, p.flags, (unsigned)p.seq, (unsigned)p.length);
    h[0] = 'X';
    printf(" %d", (int)pcid_parse_header(h, &p));
    pcid_put_header(h, PCID_MSG_BEGIN, 9, PCID_BEGIN_LEN);
    h[PCID_HDR_VERSION] = 2;
    int status = (int)pcid_parse_header(h, &p);
    printf(" %d %u", status, (unsigned)p.seq);
    pcid_put_header(h, PCID_MSG_BEGIN, 9, PCID_MAX_PAYLOAD_LEN + 1);
    printf(" %d", (int)pcid_parse_header(h, &p));
    pcid_put_header(h, PCID_MSG_BEGIN, 9, PCID_MAX_PAYLOAD_LEN);
    printf(" %d\n", (int)pcid_parse_header(h, &p));
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.path().join("header_check");
    compile(&src, &exe);
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let rust = DriverMessage::Begin {
        seq: 7,
        kind: ShutdownKind::Reboot,
        deadline: Duration::from_millis(2500),
    }
    .encode()
    .unwrap();
    let hex: String = rust[..wire::HEADER_LEN]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{hex} 0 4 0 7 9 1 2 9 3 0\n")
    );
}

#[test]
fn participant_constants_match_the_rust_encoder() {
    use pcid_interface::protocol::Provider;
    let defs = defines();
    assert_eq!(int(&defs, "PCID_MAX_PROVIDERS"), wire::MAX_PROVIDERS as u64);
    // Register { version 1, two-phase, "fs", [device, participant "v", all] }:
    // payload = u16 version, support, string name (u16 len + 2), u16 count,
    // then the providers, each led by its tag.
    let f = DriverMessage::Register {
        version: 1,
        support: ShutdownSupport::TwoPhase,
        name: "fs".into(),
        providers: vec![
            Provider::Device(address()),
            Provider::Participant("v".into()),
            Provider::AllDevices,
        ],
    }
    .encode()
    .unwrap();
    let first = 2 + 1 + 2 + 2 + 2;
    assert_eq!(payload_byte(&f, first), int(&defs, "PCID_PROVIDER_DEVICE"));
    let second = first + 1 + int(&defs, "PCID_ADDRESS_LEN") as usize;
    assert_eq!(
        payload_byte(&f, second),
        int(&defs, "PCID_PROVIDER_PARTICIPANT")
    );
    let third = second + 1 + 2 + 1;
    assert_eq!(
        payload_byte(&f, third),
        int(&defs, "PCID_PROVIDER_ALL_DEVICES")
    );
    assert_eq!(f.len(), wire::HEADER_LEN + third + 1);
    let r = DriverMessage::Registered { version: 1, id: 3 }
        .encode()
        .unwrap();
    assert_eq!(
        (r.len() - wire::HEADER_LEN) as u64,
        int(&defs, "PCID_REGISTERED_LEN")
    );
}
