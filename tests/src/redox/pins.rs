//! The pinned inputs of the Redox image: `tests/redox/pins.toml` and the
//! patches beside it.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::RedoxError;

/// Toolchain versions (rustup names) and tool versions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toolchains {
    /// Kernel, bootloader, bootstrap.
    pub kernel: String,
    /// relibc.
    pub relibc: String,
    /// Redox userspace (with rustup's `x86_64-unknown-redox` standard library).
    pub userspace: String,
    /// cbindgen version (`cargo install --locked`).
    pub cbindgen: String,
}

/// One source tree at a fixed commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Short name (`kernel`, `base`, ...).
    pub name: String,
    /// `owner/name` of the repository the archive was taken from.
    pub repo: String,
    /// Commit (full or abbreviated, exactly as the archive is named).
    pub commit: String,
    /// Commit date, for people.
    #[serde(default)]
    pub date: Option<String>,
    /// Project page to download from when no local archive exists.
    pub upstream: String,
    /// Where the tree goes inside the source directory.
    pub dest: String,
    /// Patch file in `tests/redox/patches/`, applied after unpacking.
    #[serde(default)]
    pub patch: Option<String>,
}

impl Source {
    /// File name of the local archive: `<owner>+<name>@<commit>.tar.gz`.
    pub fn archive_name(&self) -> String {
        format!("{}@{}.tar.gz", self.repo.replace('/', "+"), self.commit)
    }

    /// Download address of a tarball of the tree at the commit. Both GitLab
    /// and GitHub put the tree under one top-level directory, which
    /// unpacking strips.
    pub fn download_url(&self) -> String {
        let base = self.upstream.trim_end_matches('/');
        if base.contains("github.com") {
            format!("{base}/archive/{}.tar.gz", self.commit)
        } else {
            let project = base.rsplit('/').next().unwrap_or(base);
            format!("{base}/-/archive/{c}/{project}-{c}.tar.gz", c = self.commit)
        }
    }
}

/// `tests/redox/pins.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    /// Toolchains.
    pub toolchains: Toolchains,
    /// Sources, unpacked in this order (a `dest` inside another's comes later).
    pub sources: Vec<Source>,
    /// Directory holding pins.toml and patches/ (not in the file).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Pins {
    /// Reads and checks `dir/pins.toml`.
    pub fn load(dir: &Path) -> Result<Self, RedoxError> {
        let path = dir.join("pins.toml");
        let text = fs::read_to_string(&path)
            .map_err(|e| RedoxError::setup(format!("reading {}: {e}", path.display())))?;
        let mut pins = Self::parse(&text)
            .map_err(|e| RedoxError::setup(format!("{}: {e}", path.display())))?;
        pins.dir = dir.to_path_buf();
        for s in &pins.sources {
            if let Some(p) = &s.patch {
                let patch = pins.patch_path(p);
                if !patch.is_file() {
                    return Err(RedoxError::setup(format!(
                        "{}: source {} names patch {p}, which is not at {}",
                        path.display(),
                        s.name,
                        patch.display()
                    )));
                }
            }
        }
        Ok(pins)
    }

    /// Parses the file's text and checks that names are unique, that commits
    /// look like commits, and that every `dest` is a relative path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pins: Pins = toml::from_str(text).map_err(|e| e.message().to_string())?;
        for (i, s) in pins.sources.iter().enumerate() {
            if pins.sources[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("source {} is listed twice", s.name));
            }
            if s.commit.len() < 7 || !s.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "source {}: commit {:?} is not a hexadecimal commit id",
                    s.name, s.commit
                ));
            }
            let dest = Path::new(&s.dest);
            if s.dest.is_empty()
                || dest.is_absolute()
                || dest
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!(
                    "source {}: dest {:?} must be a plain relative path",
                    s.name, s.dest
                ));
            }
            if !s.repo.contains('/') {
                return Err(format!(
                    "source {}: repo {:?} is not owner/name",
                    s.name, s.repo
                ));
            }
        }
        Ok(pins)
    }

    /// A source by name.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Path of a patch file.
    pub fn patch_path(&self, patch: &str) -> PathBuf {
        self.dir.join("patches").join(patch)
    }

    /// A key naming the patched source tree: every pin and every patch's
    /// contents. Two checkouts with the same key build the same trees.
    pub fn sources_key(&self) -> Result<String, RedoxError> {
        let mut h = Sha256::new();
        for s in &self.sources {
            h.update(format!("{}|{}|{}|{}\n", s.name, s.repo, s.commit, s.dest));
            if let Some(p) = &s.patch {
                let path = self.patch_path(p);
                let data = fs::read(&path)
                    .map_err(|e| RedoxError::setup(format!("reading {}: {e}", path.display())))?;
                h.update(&data);
            }
        }
        Ok(hex16(h))
    }
}

/// Hash of several strings, for cache keys.
pub fn key_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex16(h)
}

/// Hash of every file under `dir` (paths and contents), for cache keys.
pub fn key_of_dir(dir: &Path) -> Result<String, RedoxError> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)
        .map_err(|e| RedoxError::setup(format!("reading {}: {e}", dir.display())))?;
    files.sort();
    let mut h = Sha256::new();
    for rel in files {
        let data = fs::read(dir.join(&rel))
            .map_err(|e| RedoxError::setup(format!("reading {}: {e}", dir.join(&rel).display())))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0u8]);
        h.update(&data);
    }
    Ok(hex16(h))
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
    Ok(())
}

fn hex16(h: Sha256) -> String {
    let digest = h.finalize();
    let mut s = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[toolchains]
kernel = "nightly-2025-10-03"
relibc = "nightly-2025-11-15"
userspace = "1.95.0"
cbindgen = "0.29.4"

[[sources]]
name = "kernel"
repo = "redox-os/kernel"
commit = "a919d2626b9d176a08b9fa7a0c899a54d9fa02b5"
upstream = "https://gitlab.redox-os.org/redox-os/kernel"
dest = "kernel"

[[sources]]
name = "openlibm"
repo = "JuliaMath/openlibm"
commit = "319b5f2"
upstream = "https://github.com/JuliaMath/openlibm"
dest = "relibc/openlibm"
"#;

    #[test]
    fn archive_names_and_download_urls() {
        let pins = Pins::parse(MINIMAL).unwrap();
        let k = pins.source("kernel").unwrap();
        assert_eq!(
            k.archive_name(),
            "redox-os+kernel@a919d2626b9d176a08b9fa7a0c899a54d9fa02b5.tar.gz"
        );
        assert_eq!(
            k.download_url(),
            "https://gitlab.redox-os.org/redox-os/kernel/-/archive/a919d2626b9d176a08b9fa7a0c899a54d9fa02b5/kernel-a919d2626b9d176a08b9fa7a0c899a54d9fa02b5.tar.gz"
        );
        let o = pins.source("openlibm").unwrap();
        assert_eq!(o.archive_name(), "JuliaMath+openlibm@319b5f2.tar.gz");
        assert_eq!(
            o.download_url(),
            "https://github.com/JuliaMath/openlibm/archive/319b5f2.tar.gz"
        );
    }

    #[test]
    fn bad_pins_are_refused_with_the_reason() {
        let dup = format!("{MINIMAL}\n[[sources]]\nname = \"kernel\"\nrepo = \"a/b\"\ncommit = \"1234567\"\nupstream = \"u\"\ndest = \"k2\"\n");
        assert_eq!(
            Pins::parse(&dup).unwrap_err(),
            "source kernel is listed twice"
        );
        let bad_commit = MINIMAL.replace("319b5f2", "main");
        assert!(Pins::parse(&bad_commit)
            .unwrap_err()
            .contains("is not a hexadecimal commit id"));
        let escape = MINIMAL.replace("relibc/openlibm", "../elsewhere");
        assert!(Pins::parse(&escape)
            .unwrap_err()
            .contains("must be a plain relative path"));
        let unknown = MINIMAL.replace("dest = \"kernel\"", "dest = \"kernel\"\nbranch = \"x\"");
        assert!(Pins::parse(&unknown).unwrap_err().contains("unknown field"));
    }

    #[test]
    fn the_projects_pins_load_and_name_existing_patches() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("redox");
        let pins = Pins::load(&dir).unwrap();
        for name in ["kernel", "rmm", "bootloader", "relibc", "base", "redoxfs"] {
            assert!(pins.source(name).is_some(), "{name} missing");
        }
        // A nested dest comes after the tree that contains it.
        let pos = |n: &str| pins.sources.iter().position(|s| s.name == n).unwrap();
        assert!(pos("kernel") < pos("rmm"));
        assert!(pos("relibc") < pos("openlibm") && pos("relibc") < pos("dlmalloc"));
        assert_eq!(pins.sources_key().unwrap().len(), 16);
    }

    #[test]
    fn keys_change_with_any_part() {
        assert_ne!(key_of(&["a", "bc"]), key_of(&["ab", "c"]));
        assert_eq!(key_of(&["x"]), key_of(&["x"]));
    }
}
