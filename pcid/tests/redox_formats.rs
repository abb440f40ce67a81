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

/// `recipe.toml` uses only keys the cookbook's recipe format defines
/// (redox-os cookbook `src/recipe.rs`: `[source]` git/upstream/branch/rev/
/// shallow_clone/patches/script | tar/blake3/patches/script | path | same_as;
/// `[build]` template plus the template's own keys and dependencies;
/// `[package]` dependencies/version/description; `[[optional-packages]]`),
/// and every file its script copies from the source exists here.
#[test]
fn recipe_uses_only_cookbook_keys_and_existing_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("recipe.toml")).unwrap();
    let recipe: toml::Table = text.parse().unwrap();
    for key in recipe.keys() {
        assert!(
            ["source", "build", "package", "optional-packages"].contains(&key.as_str()),
            "top-level key {key}"
        );
    }
    let source = recipe["source"].as_table().unwrap();
    let keys: Vec<&str> = source.keys().map(String::as_str).collect();
    let allowed: &[&str] = match () {
        _ if source.contains_key("git") => &[
            "git",
            "upstream",
            "branch",
            "rev",
            "shallow_clone",
            "patches",
            "script",
        ],
        _ if source.contains_key("tar") => &["tar", "blake3", "patches", "script"],
        _ if source.contains_key("path") => &["path"],
        _ => &["same_as"],
    };
    assert!(
        keys.iter().all(|k| allowed.contains(k)),
        "[source] {keys:?}"
    );

    let build = recipe["build"].as_table().unwrap();
    let template = build["template"].as_str().unwrap();
    let template_keys: &[&str] = match template {
        "custom" => &["script"],
        "cargo" => &[
            "cargopath",
            "cargoflags",
            "cargopackages",
            "cargoexamples",
            "clearlocked",
            "cargopackagesprefixed",
        ],
        "none" | "remote" => &[],
        other => panic!("template {other} is not used by this project"),
    };
    for key in build.keys() {
        assert!(
            ["template", "dependencies", "dev-dependencies"].contains(&key.as_str())
                || template_keys.contains(&key.as_str()),
            "[build] {key}"
        );
    }
    if let Some(package) = recipe.get("package") {
        for key in package.as_table().unwrap().keys() {
            assert!(
                ["dependencies", "version", "description"].contains(&key.as_str()),
                "[package] {key}"
            );
        }
    }

    if template == "custom" {
        let script = build["script"].as_str().unwrap();
        // Every file copied from the source exists in this repository.
        for word in script.split_whitespace() {
            let word = word.trim_matches('"');
            if let Some(rel) = word.strip_prefix("${COOKBOOK_SOURCE}/") {
                assert!(root.join(rel).is_file(), "recipe copies missing {rel}");
            }
        }
        // Every package it builds is a workspace member with a binary of that name.
        let line = script
            .lines()
            .find(|l| l.trim_start().starts_with("cookbook_cargo_packages"))
            .expect("cookbook_cargo_packages line");
        for package in line.split_whitespace().skip(1) {
            let main = match package {
                "pcid" => "pcid/src/main.rs",
                "nvmed" => "nvmed/src/main.rs",
                "shutdownd" => "shutdownd/src/main.rs",
                other => panic!("unexpected package {other}"),
            };
            assert!(root.join(main).is_file(), "{main}");
        }
    }
}
