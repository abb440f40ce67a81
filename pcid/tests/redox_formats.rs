//! The files in `initfs/` and `recipe.toml` use only what the Redox this
//! project targets accepts (base 6091b4662 of 2026-01-10, the cookbook of that
//! time): its init reads line-based `init.rc` scripts (no file of this project
//! needs one: hwd starts pcid), pcid-spawner reads `etc/pcid/*.toml` tables,
//! the cookbook reads `recipe.toml`.
//!
//! * Match tables (`initfs/etc/pcid/*.toml`, and the Linux stacks'
//!   `tests/pcid.d/*.toml`): `[[drivers]]` with `name`, `class`, `subclass`,
//!   `interface`, `vendor`, `device`, `ids`, `device_id_range`, `command`;
//!   initfs commands are absolute (`/scheme/initfs/lib/drivers/...`).
//! * The recipe: cookbook keys only, files it copies exist, nothing staged
//!   where Redox's base or coreutils put files.

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

#[test]
fn match_tables_use_only_redox_pcid_keys() {
    let initfs_tables = files(&initfs().join("etc/pcid"), "toml");
    let linux_tables = files(&initfs().join("../tests/pcid.d"), "toml");
    assert!(!initfs_tables.is_empty() && !linux_tables.is_empty());
    for path in &initfs_tables {
        let table: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
        for entry in table["drivers"].as_array().unwrap() {
            for word in entry["command"].as_array().unwrap().iter().take(1) {
                let program = word.as_str().unwrap();
                assert!(
                    program.starts_with("/scheme/initfs/lib/drivers/"),
                    "{}: initfs command {program} is not an absolute initfs path",
                    path.display()
                );
            }
        }
    }
    for path in initfs_tables.iter().chain(&linux_tables) {
        let text = std::fs::read_to_string(path).unwrap();
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
                assert!(root.join(rel).exists(), "recipe copies missing {rel}");
            }
        }
        // It builds exactly the three shipped binaries, with the lock file.
        let words: Vec<&str> = script.split_whitespace().collect();
        let bins: Vec<&str> = words
            .windows(2)
            .filter(|w| w[0] == "--bin")
            .map(|w| w[1])
            .collect();
        assert_eq!(bins, ["pcid", "nvmed", "shutdownd"], "{script}");
        assert!(script.contains("--locked"), "{script}");
        for (bin, main) in [
            ("pcid", "pcid/src/main.rs"),
            ("nvmed", "nvmed/src/main.rs"),
            ("shutdownd", "shutdownd/src/main.rs"),
        ] {
            assert!(root.join(main).is_file(), "{bin}: {main}");
        }
        // Nothing is staged where Redox's base package (pcid, pcid-spawner,
        // /usr/lib/drivers/*) or coreutils (shutdown) put files.
        for taken in [
            "/usr/bin/pcid\"",
            "/usr/bin/pcid-spawner",
            "/usr/lib/drivers",
            "/usr/bin/shutdown\"",
            "cookbook_cargo_packages",
        ] {
            assert!(
                !script.contains(taken),
                "the recipe stages into {taken}: {script}"
            );
        }
    }
}
