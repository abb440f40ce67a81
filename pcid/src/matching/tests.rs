use super::*;
use pcid_interface::function::FunctionBackend;

fn function(vendor: u16, device: u16, class: u8, subclass: u8, interface: u8) -> PciFunction {
    PciFunction {
        address: "0000:00:04.0".parse().unwrap(),
        vendor,
        device,
        class,
        subclass,
        interface,
        revision: 0,
        parent: None,
        backend: FunctionBackend::Redox {
            bars: Vec::new(),
            legacy_irq: None,
        },
    }
}

fn parse(text: &str) -> Result<MatchTable, MatchError> {
    MatchTable::parse(Path::new("t.toml"), text)
}

fn program_for(t: &MatchTable, f: &PciFunction) -> Option<String> {
    t.find(f).map(|e| e.program().to_string())
}

#[test]
fn class_entry_matches_any_vendor() {
    let t = parse("[[drivers]]\nname = \"NVMe\"\nclass = 1\nsubclass = 8\ncommand = [\"nvmed\"]\n")
        .unwrap();
    let e = t.find(&function(0x1b36, 0x10, 1, 8, 2)).unwrap();
    assert_eq!(e.name, "NVMe");
    assert_eq!(e.program(), "nvmed");
    assert_eq!(e.location.to_string(), "t.toml:1");
    assert!(t.find(&function(0x1b36, 0x10, 1, 6, 1)).is_none());
}

#[test]
fn all_present_keys_must_match() {
    let t = parse(
        "[[drivers]]\nclass = 1\nvendor = 0x1af4\ndevice = 0x10f0\ninterface = 0\ncommand = [\"a\"]\n",
    )
    .unwrap();
    assert!(t.find(&function(0x1af4, 0x10f0, 1, 0, 0)).is_some());
    assert!(t.find(&function(0x1af4, 0x10f0, 2, 0, 0)).is_none());
    assert!(t.find(&function(0x1af4, 0x10f1, 1, 0, 0)).is_none());
    assert!(t.find(&function(0x1af5, 0x10f0, 1, 0, 0)).is_none());
    assert!(t.find(&function(0x1af4, 0x10f0, 1, 0, 1)).is_none());
    // Name defaults to the program.
    assert_eq!(t.entries[0].name, "a");
}

#[test]
fn ids_decide_vendor_and_device_alone() {
    // As in Redox: with `ids`, `vendor` and `device` are not looked at.
    let t = parse(
        "[[drivers]]\nclass = 2\nvendor = 0x1234\ndevice = 0x5678\n\
         ids = { 0x8086 = [0x1004, 0x100e], \"10ec\" = [0x8139], \"0x0x1af4\" = [0x1000] }\n\
         command = [\"nic\"]\n",
    )
    .unwrap();
    let nic = |v, d| t.find(&function(v, d, 2, 0, 0)).is_some();
    assert!(nic(0x8086, 0x100e));
    assert!(nic(0x10ec, 0x8139), "key without 0x");
    assert!(
        nic(0x1af4, 0x1000),
        "every leading 0x is stripped, as Redox does"
    );
    assert!(
        !nic(0x1234, 0x5678),
        "vendor/device ignored when ids is present"
    );
    assert!(!nic(0x8086, 0x8139), "device listed under another vendor");
    assert!(
        t.find(&function(0x8086, 0x100e, 3, 0, 0)).is_none(),
        "class still checked"
    );
}

#[test]
fn device_id_range_is_half_open_and_an_empty_one_matches_nothing() {
    let t = parse(
        "[[drivers]]\nvendor = 0x1234\ndevice_id_range = { start = 0x10, end = 0x20 }\ncommand = [\"b\"]\n\
         [[drivers]]\nvendor = 0x5678\ndevice_id_range = { start = 5, end = 5 }\ncommand = [\"c\"]\n",
    )
    .unwrap();
    assert_eq!(
        program_for(&t, &function(0x1234, 0x10, 0, 0, 0)).as_deref(),
        Some("b")
    );
    assert_eq!(
        program_for(&t, &function(0x1234, 0x1f, 0, 0, 0)).as_deref(),
        Some("b")
    );
    assert!(t.find(&function(0x1234, 0x20, 0, 0, 0)).is_none());
    assert!(t.find(&function(0x1234, 0x0f, 0, 0, 0)).is_none());
    assert!(t.find(&function(0x5678, 5, 0, 0, 0)).is_none());
}

#[test]
fn first_match_wins_and_unknown_keys_are_ignored() {
    let t = parse(
        "[[drivers]]\nname = \"XHCI\"\nclass = 0x0C\nsubclass = 0x03\ninterface = 0x30\n\
         command = [\"xhcid\"]\nuse_channel = true\n\n\
         [[drivers]]\nclass = 0x0C\ncommand = [\"other\", \"--flag\"]\n",
    )
    .unwrap();
    let e = t.find(&function(0x1b36, 0x000d, 0x0C, 0x03, 0x30)).unwrap();
    assert_eq!(e.program(), "xhcid");
    let e = t.find(&function(0x1b36, 0x000d, 0x0C, 0x03, 0x20)).unwrap();
    assert_eq!(e.command, ["other", "--flag"]);
    assert_eq!(e.location.line, 9);
}

#[test]
fn errors_name_file_and_line() {
    let e = parse("[[drivers]]\nclass = 1\ncommand = [\"a\"]\n\n[[drivers]]\nclass = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("t.toml:5:") && e.contains("command"), "{e}");
    let e = parse("[[drivers]]\nclass = 300\ncommand = [\"a\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("t.toml:2:"), "{e}");
    for key in ["xyz", "0x10000"] {
        let e = parse(&format!(
            "[[drivers]]\nids = {{ \"{key}\" = [1] }}\ncommand = [\"a\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!("t.toml:2: ids: key \"{key}\"")),
            "{e}"
        );
    }
    let e = parse("[[drivers]]\nclass = 1\ncommand = []\n")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "t.toml:3: command: must name a program");
    let e = parse("[[drivers]\n").unwrap_err().to_string();
    assert!(e.starts_with("t.toml:1:"), "{e}");
}

#[test]
fn a_directory_is_its_files_concatenated_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "[[drivers]]\nclass = 1\ncommand = [\"b\"]\n",
    )
    .unwrap();
    // No trailing newline, no .toml extension: still part of the table.
    std::fs::write(
        dir.path().join("a"),
        "[[drivers]]\nclass = 1\nsubclass = 6\ncommand = [\"a\"]",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let t = MatchTable::load(dir.path()).unwrap();
    assert_eq!(t.entries.len(), 2);
    assert_eq!(
        program_for(&t, &function(0, 0, 1, 6, 0)).as_deref(),
        Some("a")
    );
    assert_eq!(
        program_for(&t, &function(0, 0, 1, 8, 0)).as_deref(),
        Some("b")
    );
    assert_eq!(
        t.entries[1].location,
        Location {
            file: dir.path().join("b.toml"),
            line: 1
        }
    );

    // An error in a later file names that file and its own line.
    std::fs::write(
        dir.path().join("c.toml"),
        "\n[[drivers]]\nclass = \"one\"\n",
    )
    .unwrap();
    let e = MatchTable::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("c.toml:3:"), "{e}");
    let e = MatchTable::load(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read match table"), "{e}");
}

#[test]
fn a_single_file_is_a_table_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("initfs.toml");
    std::fs::write(
        &file,
        "[[drivers]]\nclass = 1\nsubclass = 8\ncommand = [\"/scheme/initfs/lib/drivers/nvmed\"]\n",
    )
    .unwrap();
    let t = MatchTable::load(&file).unwrap();
    assert_eq!(
        redox_program(t.find(&function(0x1b36, 0x10, 1, 8, 2)).unwrap().program()),
        PathBuf::from("/scheme/initfs/lib/drivers/nvmed")
    );
}

#[test]
fn redox_runs_relative_commands_from_usr_lib_drivers() {
    assert_eq!(
        redox_program("e1000d"),
        PathBuf::from("/usr/lib/drivers/e1000d")
    );
    assert_eq!(
        redox_program("/scheme/initfs/lib/drivers/ahcid"),
        PathBuf::from("/scheme/initfs/lib/drivers/ahcid")
    );
    assert_eq!(
        redox_program("sub/x"),
        PathBuf::from("/usr/lib/drivers/sub/x")
    );
}

/// The repository's initfs table (what the simulated machine and the QEMU
/// guest load) parses and matches what it documents.
#[test]
fn repository_initfs_table() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pcid.d");
    let t = MatchTable::load(&dir).unwrap();
    let program = |v, d, c, s, i| program_for(&t, &function(v, d, c, s, i));
    // QEMU's NVMe controller: class 01, subclass 08, interface 02.
    assert_eq!(program(0x1b36, 0x0010, 1, 8, 2).as_deref(), Some("nvmed"));
    assert_eq!(program(0x8086, 0xf1a8, 1, 8, 2).as_deref(), Some("nvmed"));
    assert_eq!(
        program(0x1af4, 0x10f0, 0xff, 0, 0).as_deref(),
        Some("legacyd")
    );
    assert_eq!(
        program(0x1af4, 0x10f1, 0xff, 0, 0).as_deref(),
        Some("plaind")
    );
    assert_eq!(
        program(0x1af4, 0x10f2, 0xff, 0, 0).as_deref(),
        Some("plaind")
    );
    // Virtio block and a bridge have no driver here.
    assert_eq!(program(0x1af4, 0x1001, 1, 0, 0), None);
    assert_eq!(program(0x8086, 0x7450, 6, 4, 0), None);
}

#[test]
fn resolve_program_prefers_driver_dirs() {
    use std::os::unix::fs::PermissionsExt;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [a.path(), b.path()] {
        let p = d.join("drv");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(a.path().join("plain"), "").unwrap();
    let path_var = Some(b.path().as_os_str().to_owned());
    assert_eq!(
        MatchTable::resolve_program("drv", &[a.path().to_path_buf()], path_var.clone()),
        Some(a.path().join("drv"))
    );
    assert_eq!(
        MatchTable::resolve_program("drv", &[], path_var.clone()),
        Some(b.path().join("drv"))
    );
    // Not executable, not found.
    assert_eq!(
        MatchTable::resolve_program("plain", &[a.path().to_path_buf()], None),
        None
    );
    assert_eq!(
        MatchTable::resolve_program("missing", &[a.path().to_path_buf()], path_var),
        None
    );
}
