//! The boot disk: an initfs (Redox's programs, then this project's, put in
//! by `initfs/integrate.sh` exactly as a Redox image build would), a RedoxFS
//! holding `/boot/kernel` and `/boot/initfs`, and a disk with the BIOS
//! bootloader in front of it.
//!
//! Disk layout (what the BIOS bootloader of the pinned commit expects): the
//! bootloader's first 446 bytes are the MBR code, followed by a DOS
//! partition table with one partition from 2 MiB on; the rest of the
//! bootloader (stages 2 and 3) fills the sectors after the MBR; the RedoxFS
//! starts at 2 MiB, where the bootloader looks for it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run::{copy, output, run_logged};
use super::steps::Artifacts;
use super::RedoxError;

/// Where the RedoxFS starts on the boot disk, in 512-byte sectors (2 MiB).
pub const FS_START_SECTOR: u64 = 4096;
/// Size of the boot RedoxFS (kernel + initfs fit easily).
pub const BOOT_FS_MIB: u64 = 64;

/// What goes into the initfs besides Redox's minimal set.
#[derive(Debug, Clone)]
pub struct Guest {
    /// This project's Redox binaries (`pcid`, `nvmed`, `shutdownd`).
    pub project_bin: PathBuf,
    /// Lines of `init.rc` after the drivers are up (the test's own steps).
    pub after_drivers: Vec<String>,
    /// Extra `export NAME VALUE` lines for every process.
    pub env: Vec<(String, String)>,
    /// Drivers pcid-spawner starts: base's binaries of these names go to
    /// `lib/drivers/` and each gets a match-table entry.
    pub drivers: Vec<DriverEntry>,
    /// How PCI comes up: `hwd` (Redox's way: hwd starts acpid, then pcid)
    /// or `pcid` alone.
    pub start_pci: Vec<String>,
    /// More of base's programs for `bin/` (those `start_pci` needs).
    pub base_bins: Vec<&'static str>,
    /// Test-only programs for `bin/`.
    pub test_bins: Vec<PathBuf>,
    /// Test-only drivers for `lib/drivers/` (named in `drivers`).
    pub test_drivers: Vec<PathBuf>,
    /// Options for `initfs/integrate.sh`, which puts this project's binaries
    /// in; `None` leaves them out (Redox as it is, for comparison).
    pub integrate: Option<Vec<&'static str>>,
}

/// One `[[drivers]]` entry of the initfs match table.
#[derive(Debug, Clone)]
pub struct DriverEntry {
    /// `name`.
    pub name: &'static str,
    /// Which functions it matches.
    pub matches: DriverMatch,
    /// Program under `/scheme/initfs/lib/drivers`.
    pub program: &'static str,
    /// The program is base's (copied from the base build); otherwise it is
    /// put there by `integrate.sh` or as a test driver.
    pub from_base: bool,
}

/// Redox's own AHCI driver, matched as in base's tables.
pub const AHCID: DriverEntry = DriverEntry {
    name: "AHCI storage",
    matches: DriverMatch::Class {
        class: 1,
        subclass: 6,
    },
    program: "ahcid",
    from_base: true,
};

/// Redox's own e1000 driver, matched as in base's tables.
pub const E1000D: DriverEntry = DriverEntry {
    name: "E1000 NIC",
    matches: DriverMatch::Ids {
        class: Some(0x02),
        vendor: 0x8086,
        devices: &[0x1004, 0x100e, 0x100f, 0x109a, 0x1503],
    },
    program: "e1000d",
    from_base: true,
};

/// The matching keys of an entry, as pcid-spawner reads them.
#[derive(Debug, Clone, Copy)]
pub enum DriverMatch {
    /// `class` and `subclass`.
    Class {
        /// Class code.
        class: u8,
        /// Subclass code.
        subclass: u8,
    },
    /// `ids = { VENDOR = [DEVICE, …] }`, with `class` when given.
    Ids {
        /// Class code the function must also have.
        class: Option<u8>,
        /// Vendor id.
        vendor: u16,
        /// Device ids.
        devices: &'static [u16],
    },
}

/// An entry as it is written (field names as pcid-spawner's `DriverConfig`).
#[derive(serde::Serialize)]
struct TableEntry<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subclass: Option<u8>,
    /// Vendor ids are keys, written in hex (`"0x8086"`) as pcid-spawner parses them.
    #[serde(skip_serializing_if = "Option::is_none")]
    ids: Option<std::collections::BTreeMap<String, &'a [u16]>>,
    command: [String; 1],
}

#[derive(serde::Serialize)]
struct Table<'a> {
    drivers: Vec<TableEntry<'a>>,
}

/// The match table Redox's pcid-spawner reads (`etc/pcid/initfs.toml`).
pub fn match_table(entries: &[DriverEntry]) -> Result<String, RedoxError> {
    let drivers = entries
        .iter()
        .map(|e| {
            let (class, subclass, ids) = match e.matches {
                DriverMatch::Class { class, subclass } => (Some(class), Some(subclass), None),
                DriverMatch::Ids {
                    class,
                    vendor,
                    devices,
                } => (
                    class,
                    None,
                    Some([(format!("{vendor:#06x}"), devices)].into_iter().collect()),
                ),
            };
            TableEntry {
                name: e.name,
                class,
                subclass,
                ids,
                command: [format!("/scheme/initfs/lib/drivers/{}", e.program)],
            }
        })
        .collect();
    let body = toml::to_string(&Table { drivers })
        .map_err(|e| RedoxError::setup(format!("writing the initfs match table: {e}")))?;
    Ok(format!(
        "# Generated by redox-e2e: drivers pcid-spawner starts from the initfs.\n\n{body}"
    ))
}

/// `etc/init.rc` in the line syntax of the pinned init (a bare command runs
/// and waits for its process; daemons fork and their foreground process
/// exits once ready; `echo` prints to the console).
pub fn init_rc(guest: &Guest) -> String {
    let mut lines = vec![
        "# Generated by redox-e2e.".to_string(),
        "export PATH /scheme/initfs/bin".to_string(),
        "export RUST_BACKTRACE 1".to_string(),
    ];
    for (k, v) in &guest.env {
        lines.push(format!("export {k} {v}"));
    }
    lines.extend(
        [
            "echo ===E2E-INIT-START===",
            "nulld",
            "zerod",
            "randd",
            "logd",
            "ramfs logging",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    lines.extend(guest.start_pci.iter().cloned());
    lines.push("pcid-spawner /scheme/initfs/etc/pcid/initfs.toml".to_string());
    lines.push("echo ===E2E-DRIVERS-UP===".to_string());
    lines.extend(guest.after_drivers.iter().cloned());
    lines.push(
        "echo ===E2E-FAILED=== the last init.rc line returned: the machine was not powered off"
            .to_string(),
    );
    lines.join("\n") + "\n"
}

/// Lays out the initfs tree: base's programs, the match table, init.rc,
/// then `initfs/integrate.sh` puts this project's binaries in.
pub fn initfs_tree(
    repo: &Path,
    art: &Artifacts,
    guest: &Guest,
    dir: &Path,
    log: &Path,
) -> Result<(), RedoxError> {
    let _ = fs::remove_dir_all(dir);
    let bin = dir.join("bin");
    let drivers = dir.join("lib").join("drivers");
    let minimal = [
        "init",
        "logd",
        "ramfs",
        "randd",
        "zerod",
        "pcid",
        "pcid-spawner",
    ];
    for p in minimal.iter().chain(&guest.base_bins) {
        copy(&art.base_bin.join(p), &bin.join(p))?;
    }
    for (t, into) in guest
        .test_bins
        .iter()
        .map(|t| (t, &bin))
        .chain(guest.test_drivers.iter().map(|t| (t, &drivers)))
    {
        let name = t
            .file_name()
            .ok_or_else(|| RedoxError::setup(format!("{} names no file", t.display())))?;
        copy(t, &into.join(name))?;
    }
    // zerod serves `null` when started under that name.
    copy(&art.base_bin.join("zerod"), &bin.join("nulld"))?;
    for d in guest.drivers.iter().filter(|d| d.from_base) {
        copy(&art.base_bin.join(d.program), &drivers.join(d.program))?;
    }
    let etc = dir.join("etc");
    fs::create_dir_all(etc.join("pcid")).map_err(RedoxError::io("create etc/pcid"))?;
    fs::write(
        etc.join("pcid").join("initfs.toml"),
        match_table(&guest.drivers)?,
    )
    .map_err(RedoxError::io("write etc/pcid/initfs.toml"))?;
    fs::write(etc.join("init.rc"), init_rc(guest)).map_err(RedoxError::io("write etc/init.rc"))?;
    let Some(options) = &guest.integrate else {
        return Ok(());
    };
    run_logged(
        Command::new(repo.join("initfs").join("integrate.sh"))
            .args(options)
            .arg(dir)
            .arg(&guest.project_bin),
        "image",
        log,
    )
}

/// Writes the boot disk from the kernel, the initfs tree and the
/// bootloader; returns its path.
pub fn boot_disk(
    art: &Artifacts,
    initfs: &Path,
    work: &Path,
    log: &Path,
) -> Result<PathBuf, RedoxError> {
    let root = work.join("bootfs");
    let _ = fs::remove_dir_all(&root);
    let boot = root.join("boot");
    fs::create_dir_all(&boot).map_err(RedoxError::io("create bootfs/boot"))?;
    copy(&art.kernel, &boot.join("kernel"))?;
    run_logged(
        Command::new(&art.image_tool)
            .arg("initfs")
            .arg(initfs)
            .arg(&art.bootstrap)
            .arg(boot.join("initfs")),
        "image",
        log,
    )?;
    let fs_img = work.join("bootfs.img");
    output(
        Command::new(&art.image_tool)
            .arg("redoxfs")
            .arg(&root)
            .arg(&fs_img)
            .arg(BOOT_FS_MIB.to_string()),
    )
    .map_err(|e| RedoxError::Build {
        step: "image".to_string(),
        detail: e,
        log: log.to_path_buf(),
    })?;
    let bootloader = fs::read(&art.bootloader)
        .map_err(RedoxError::io(format!("read {}", art.bootloader.display())))?;
    let fs_data = fs::read(&fs_img).map_err(RedoxError::io("read bootfs.img"))?;
    let disk = assemble_disk(&bootloader, &fs_data)?;
    let path = work.join("boot.img");
    fs::write(&path, disk).map_err(RedoxError::io(format!("write {}", path.display())))?;
    let _ = fs::remove_file(&fs_img);
    Ok(path)
}

/// The disk bytes: MBR code + one partition entry + signature, the
/// bootloader's later stages from sector 1, the file system at 2 MiB.
pub fn assemble_disk(bootloader: &[u8], fs_image: &[u8]) -> Result<Vec<u8>, RedoxError> {
    let start = FS_START_SECTOR as usize * 512;
    if bootloader.len() < 512 || bootloader.len() > start {
        return Err(RedoxError::setup(format!(
            "the bootloader is {} bytes; it must fill the MBR and fit before the file system at {start}",
            bootloader.len()
        )));
    }
    if fs_image.len() % 512 != 0 {
        return Err(RedoxError::setup(
            "the file system image is not a whole number of sectors",
        ));
    }
    let sectors = u32::try_from(fs_image.len() / 512).map_err(|_| {
        RedoxError::setup("the file system image is too large for an MBR partition")
    })?;
    let mut disk = vec![0u8; start + fs_image.len()];
    disk[..446].copy_from_slice(&bootloader[..446]);
    // Partition entry 1: not bootable, CHS unused (all ones), type 0x83,
    // first LBA, sector count (little endian).
    let entry = &mut disk[446..462];
    entry[0] = 0x00;
    entry[1..4].copy_from_slice(&[0xff; 3]);
    entry[4] = 0x83;
    entry[5..8].copy_from_slice(&[0xff; 3]);
    entry[8..12].copy_from_slice(&(FS_START_SECTOR as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk[512..bootloader.len()].copy_from_slice(&bootloader[512..]);
    disk[start..].copy_from_slice(fs_image);
    Ok(disk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_layout_matches_what_the_bios_bootloader_reads() {
        let bootloader: Vec<u8> = (0..2048u32).map(|i| (i % 251) as u8).collect();
        let fs = vec![0xabu8; 8192];
        let disk = assemble_disk(&bootloader, &fs).unwrap();
        assert_eq!(&disk[..446], &bootloader[..446]);
        assert_eq!(disk[446 + 4], 0x83);
        assert_eq!(u32::from_le_bytes(disk[454..458].try_into().unwrap()), 4096);
        assert_eq!(u32::from_le_bytes(disk[458..462].try_into().unwrap()), 16);
        assert_eq!(&disk[510..512], &[0x55, 0xaa]);
        assert_eq!(&disk[512..2048], &bootloader[512..]);
        assert!(disk[2048..4096 * 512].iter().all(|&b| b == 0));
        assert_eq!(&disk[2 << 20..], &fs[..]);
        assert!(assemble_disk(&bootloader[..100], &fs).is_err());
        assert!(assemble_disk(&bootloader, &fs[..100]).is_err());
    }

    #[test]
    fn init_rc_starts_pcid_then_the_spawner_then_the_test() {
        let guest = Guest {
            project_bin: PathBuf::from("/b"),
            after_drivers: vec!["shutdownd --json -".to_string()],
            env: vec![("RUST_LOG".to_string(), "info".to_string())],
            drivers: vec![],
            start_pci: vec!["pcid".to_string()],
            base_bins: vec![],
            test_bins: vec![],
            test_drivers: vec![],
            integrate: Some(vec!["--with-nvmed", "--as-shutdown"]),
        };
        let rc = init_rc(&guest);
        let pos = |s: &str| {
            rc.find(s)
                .unwrap_or_else(|| panic!("{s} missing from {rc}"))
        };
        assert!(pos("export RUST_LOG info") < pos("===E2E-INIT-START==="));
        assert!(pos("\npcid\n") < pos("pcid-spawner /scheme/initfs/etc/pcid/initfs.toml"));
        assert!(pos("pcid-spawner") < pos("===E2E-DRIVERS-UP==="));
        assert!(pos("===E2E-DRIVERS-UP===") < pos("shutdownd --json -"));
        assert!(rc.trim_end().ends_with("the machine was not powered off"));
    }

    #[test]
    fn match_table_uses_absolute_initfs_commands() {
        let t = match_table(&[
            DriverEntry {
                name: "NVMe storage",
                matches: DriverMatch::Class {
                    class: 1,
                    subclass: 8,
                },
                program: "nvmed",
                from_base: false,
            },
            DriverEntry {
                name: "E1000 NIC",
                matches: DriverMatch::Ids {
                    class: Some(2),
                    vendor: 0x8086,
                    devices: &[0x100e],
                },
                program: "e1000d",
                from_base: true,
            },
        ])
        .unwrap();
        let parsed: toml::Value = toml::from_str(&t).unwrap();
        let d = &parsed["drivers"][0];
        assert_eq!(d["class"].as_integer(), Some(1));
        assert_eq!(d["subclass"].as_integer(), Some(8));
        assert_eq!(
            d["command"][0].as_str(),
            Some("/scheme/initfs/lib/drivers/nvmed")
        );
        assert_eq!(
            parsed["drivers"][1]["ids"]["0x8086"][0].as_integer(),
            Some(0x100e)
        );
        assert_eq!(parsed["drivers"][1]["class"].as_integer(), Some(2));
        assert!(parsed["drivers"][1].get("subclass").is_none());
        assert!(d.get("ids").is_none());
    }
}
