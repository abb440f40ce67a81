//! The files in `initfs/` use only what Redox's own programs accept.
//!
//! * Init scripts (`etc/*.rc`, legacy script units): Redox's unit-based init
//!   knows `requires_weak`, `nowait` and bare commands (run and wait); the
//!   older init.rc interpreter also knew `cd`, `echo`, `export`, `run`,
//!   `run.d`, `stdio`, `unset`. Anything else is taken as a program name, so
//!   a line must start with a keyword or with one of the programs shipped here.
//! * Service units (`*.service`, TOML): `[unit]` with `description`,
//!   `requires`, `requires_weak`; `[service]` with `cmd`, `args`, `envs`,
//!   `inherit_envs`, `type` (`notify`, `oneshot`, `oneshot_async`, or
//!   `{ scheme = "..." }`). Redox's init rejects unknown service keys.
//! * Match tables (`lib/pcid.d/*.toml`): `[[drivers]]` with `name`, `class`,
//!   `subclass`, `interface`, `vendor`, `device`, `ids`, `device_id_range`,
//!   `command`.

use std::path::{Path, PathBuf};

fn initfs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../initfs")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

const SCRIPT_KEYWORDS: &[&str] = &[
    "requires_weak",
    "nowait",
    "cd",
    "echo",
    "export",
    "run",
    "run.d",
    "stdio",
    "unset",
];
const SHIPPED_PROGRAMS: &[&str] = &["pcid", "shutdownd"];

#[test]
fn init_scripts_use_only_redox_script_commands() {
    let scripts = files(&initfs().join("etc"), "rc");
    assert!(!scripts.is_empty());
    for path in scripts {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split(' ').filter(|w| !w.is_empty());
            let mut first = words.next().unwrap_or_default();
            if first == "nowait" {
                first = words.next().unwrap_or_default();
            }
            // `VAR=value program ...` sets the program's environment.
            while first.contains('=') {
                first = words.next().unwrap_or_default();
            }
            assert!(
                SCRIPT_KEYWORDS.contains(&first) || SHIPPED_PROGRAMS.contains(&first),
                "{}:{}: `{first}` is neither a Redox init keyword nor a program shipped here",
                path.display(),
                n + 1
            );
        }
    }
}

#[test]
fn service_units_use_only_keys_redox_init_accepts() {
    let units = files(&initfs().join("lib/init.d"), "service");
    assert!(!units.is_empty());
    for path in units {
        let text = std::fs::read_to_string(&path).unwrap();
        let unit: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tables: Vec<&str> = unit.keys().map(String::as_str).collect();
        assert_eq!(tables, ["service", "unit"], "{}", path.display());
        for key in unit["unit"].as_table().unwrap().keys() {
            assert!(
                ["description", "requires", "requires_weak"].contains(&key.as_str()),
                "{}: [unit] {key}",
                path.display()
            );
        }
        let service = unit["service"].as_table().unwrap();
        for key in service.keys() {
            assert!(
                ["cmd", "args", "envs", "inherit_envs", "type"].contains(&key.as_str()),
                "{}: [service] {key}",
                path.display()
            );
        }
        let cmd = service["cmd"].as_str().unwrap();
        assert!(
            SHIPPED_PROGRAMS.contains(&cmd),
            "{}: cmd {cmd}",
            path.display()
        );
        match &service["type"] {
            toml::Value::String(t) => assert!(
                ["notify", "oneshot", "oneshot_async"].contains(&t.as_str()),
                "{}: type {t}",
                path.display()
            ),
            toml::Value::Table(t) => assert!(t.contains_key("scheme") && t.len() == 1),
            other => panic!("{}: type {other}", path.display()),
        }
    }
}

#[test]
fn match_tables_use_only_redox_pcid_keys() {
    let tables = files(&initfs().join("lib/pcid.d"), "toml");
    assert!(!tables.is_empty());
    for path in tables {
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(
            table.keys().map(String::as_str).collect::<Vec<_>>(),
            ["drivers"],
            "{}",
            path.display()
        );
        for entry in table["drivers"].as_array().unwrap() {
            for key in entry.as_table().unwrap().keys() {
                assert!(
                    [
                        "name",
                        "class",
                        "subclass",
                        "interface",
                        "vendor",
                        "device",
                        "ids",
                        "device_id_range",
                        "command"
                    ]
                    .contains(&key.as_str()),
                    "{}: drivers key {key}",
                    path.display()
                );
            }
            assert!(entry["command"].as_array().is_some_and(|c| !c.is_empty()));
        }
    }
}
