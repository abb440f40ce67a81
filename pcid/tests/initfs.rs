//! `initfs/`: the entry for Redox's initfs match table, and `integrate.sh`,
//! which puts this project into a Redox initfs tree (the Redox boot test runs
//! the same script on its image).

use std::path::{Path, PathBuf};
use std::process::Command;

use pcid::matching::MatchTable;
use pcid_interface::function::{FunctionBackend, PciAddress, PciFunction};

fn initfs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../initfs")
}

fn qemu_nvme() -> PciFunction {
    PciFunction {
        address: PciAddress {
            segment: 0,
            bus: 0,
            device: 4,
            function: 0,
        },
        vendor: 0x1b36,
        device: 0x0010,
        class: 1,
        subclass: 8,
        interface: 2,
        revision: 2,
        parent: None,
        backend: FunctionBackend::Redox {
            bars: Vec::new(),
            legacy_irq: None,
        },
    }
}

#[test]
fn the_initfs_entry_matches_an_nvme_controller_with_the_initfs_nvmed() {
    let table = MatchTable::load(&initfs().join("etc/pcid/initfs.toml")).unwrap();
    let entry = table.find(&qemu_nvme()).expect("an entry for NVMe");
    assert_eq!(entry.program(), "/scheme/initfs/lib/drivers/nvmed");
}

/// A Redox initfs tree with Redox's own programs stood in for by files.
fn redox_initfs(dir: &Path, table: Option<&str>) -> (PathBuf, PathBuf) {
    let tree = dir.join("initfs");
    for p in [
        "bin/pcid",
        "bin/hwd",
        "bin/pcid-spawner",
        "lib/drivers/ahcid",
    ] {
        let path = tree.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("redox {p}")).unwrap();
    }
    if let Some(t) = table {
        std::fs::create_dir_all(tree.join("etc/pcid")).unwrap();
        std::fs::write(tree.join("etc/pcid/initfs.toml"), t).unwrap();
    }
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for b in ["pcid", "nvmed", "shutdownd"] {
        std::fs::write(bin.join(b), format!("ours {b}")).unwrap();
    }
    (tree, bin)
}

fn integrate(args: &[&str], tree: &Path, bin: &Path) -> std::process::Output {
    Command::new(initfs().join("integrate.sh"))
        .args(args)
        .arg(tree)
        .arg(bin)
        .output()
        .expect("run integrate.sh")
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn integrate_replaces_only_pcid_and_adds_shutdownd() {
    let dir = tempfile::tempdir().unwrap();
    let ahci = "[[drivers]]\nname = \"AHCI storage\"\nclass = 1\nsubclass = 6\ncommand = [\"/scheme/initfs/lib/drivers/ahcid\"]\n";
    let (tree, bin) = redox_initfs(dir.path(), Some(ahci));
    let out = integrate(&[], &tree, &bin);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(read(tree.join("bin/pcid")), "ours pcid");
    assert_eq!(read(tree.join("bin/shutdownd")), "ours shutdownd");
    // hwd, pcid-spawner, the other drivers and the table are Redox's.
    assert_eq!(read(tree.join("bin/hwd")), "redox bin/hwd");
    assert_eq!(
        read(tree.join("bin/pcid-spawner")),
        "redox bin/pcid-spawner"
    );
    assert_eq!(
        read(tree.join("lib/drivers/ahcid")),
        "redox lib/drivers/ahcid"
    );
    assert_eq!(read(tree.join("etc/pcid/initfs.toml")), ahci);
    assert!(!tree.join("lib/drivers/nvmed").exists());
    assert!(!tree.join("bin/shutdown").exists());
}

#[test]
fn integrate_with_nvmed_adds_the_table_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let ahci = "[[drivers]]\nname = \"AHCI storage\"\nclass = 1\nsubclass = 6\ncommand = [\"/scheme/initfs/lib/drivers/ahcid\"]\n";
    let (tree, bin) = redox_initfs(dir.path(), Some(ahci));
    for _ in 0..2 {
        let out = integrate(&["--with-nvmed", "--as-shutdown"], &tree, &bin);
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(read(tree.join("lib/drivers/nvmed")), "ours nvmed");
    assert_eq!(read(tree.join("bin/shutdown")), "ours shutdownd");
    let table = read(tree.join("etc/pcid/initfs.toml"));
    assert!(table.starts_with(ahci), "{table}");
    assert_eq!(
        table.matches("/scheme/initfs/lib/drivers/nvmed").count(),
        1,
        "{table}"
    );
    // The result is a table Redox's rules read: AHCI first, then NVMe.
    let path = tree.join("etc/pcid/initfs.toml");
    let parsed = MatchTable::load(&path).unwrap();
    assert_eq!(
        parsed.find(&qemu_nvme()).unwrap().program(),
        "/scheme/initfs/lib/drivers/nvmed"
    );
    // A table that already starts the initfs nvmed (Redox's own) is left alone.
    let dir = tempfile::tempdir().unwrap();
    let redox = read(initfs().join("etc/pcid/initfs.toml"));
    let (tree, bin) = redox_initfs(dir.path(), Some(&redox));
    assert!(integrate(&["--with-nvmed"], &tree, &bin).status.success());
    assert_eq!(read(tree.join("etc/pcid/initfs.toml")), redox);
}

#[test]
fn integrate_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, bin) = redox_initfs(dir.path(), None);
    let out = integrate(&["--bogus"], &tree, &bin);
    assert_eq!(out.status.code(), Some(2));
    let out = integrate(&[], &dir.path().join("nowhere"), &bin);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an initfs tree"));
    std::fs::remove_file(bin.join("nvmed")).unwrap();
    let out = integrate(&["--with-nvmed"], &tree, &bin);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nvmed is missing"));
    // Without a table and without --with-nvmed it warns: nothing will start.
    let out = integrate(&[], &tree, &bin);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pcid-spawner will start no drivers"));
}
