//! The build steps: host tools, toolchains, sources, and each Redox part.
//!
//! Every step's result lives in the cache under a key made of everything it
//! is built from (pins, patches, toolchain names, and the step's own recipe
//! version), so a second run reuses it and a change to any input rebuilds
//! exactly what depends on it. Cargo's target directories are kept per step
//! (`<cache>/target/<step>`) to make rebuilds incremental.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::pins::{key_of, key_of_dir, Pins, Source};
use super::run::{copy, have, output, progress, run_logged, Staged};
use super::RedoxError;

/// Rust target of Redox userspace.
pub const REDOX_TARGET: &str = "x86_64-unknown-redox";

/// Bump when a step's recipe (its commands) changes, to rebuild its result.
const RECIPE: &str = "1";

/// Commands the build runs, and the Debian package each comes from
/// (installed by `tests/setup.sh --redox`).
pub const HOST_TOOLS: &[(&str, &str)] = &[
    ("clang", "clang"),
    ("ld.lld", "lld"),
    ("llvm-ar", "llvm"),
    ("llvm-objcopy", "llvm"),
    ("nasm", "nasm"),
    ("ld", "binutils"),
    ("objcopy", "binutils"),
    ("make", "make"),
    ("patch", "patch"),
    ("tar", "tar"),
    ("gzip", "gzip"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("rustup", "rustup (https://rustup.rs)"),
];

/// Base programs the image uses (built from base's workspace).
pub const BASE_PACKAGES: &[&str] = &[
    "init",
    "logd",
    "ramfs",
    "randd",
    "zerod",
    "rtcd",
    "pcid",
    "pcid-spawner",
    "hwd",
    "acpid",
    "ahcid",
    "e1000d",
    "nvmed",
];

/// Everything the build produced, by path.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The kernel (stripped).
    pub kernel: PathBuf,
    /// The BIOS bootloader (`bootloader.bin`: MBR code, then stages 2 and 3).
    pub bootloader: PathBuf,
    /// relibc's sysroot (`include/`, `lib/`).
    pub sysroot: PathBuf,
    /// bootstrap, prepended to the initfs.
    pub bootstrap: PathBuf,
    /// Directory of base's binaries (see [`BASE_PACKAGES`]).
    pub base_bin: PathBuf,
    /// The `redoxfs` daemon for Redox.
    pub redoxfs: PathBuf,
    /// The host tool that writes initfs and RedoxFS images and reads RedoxFS.
    pub image_tool: PathBuf,
    /// Wrappers named `x86_64-unknown-redox-*` (C compiler/linker, binutils).
    pub toolchain_bin: PathBuf,
}

/// Where things go and what they are built from.
pub struct Builder {
    /// Pins and patches.
    pub pins: Pins,
    /// Cache root.
    pub cache: PathBuf,
    /// Where local source archives are (if any).
    pub redox_src: Option<PathBuf>,
    /// Parallel jobs for cargo and make.
    pub jobs: usize,
    /// The image tool's sources (`tests/redox/image-tool`).
    pub image_tool_src: PathBuf,
    /// [`Pins::sources_key`], computed once.
    pub sources_key: String,
}

impl Builder {
    fn log(&self, step: &str) -> PathBuf {
        self.cache.join("logs").join(format!("{step}.log"))
    }

    fn target_dir(&self, step: &str) -> PathBuf {
        self.cache.join("target").join(step)
    }

    fn toolchain_bin(&self) -> PathBuf {
        self.cache.join("toolchain").join("bin")
    }

    fn cbindgen_root(&self) -> PathBuf {
        self.cache
            .join("tools")
            .join(format!("cbindgen-{}", self.pins.toolchains.cbindgen))
    }

    /// PATH for build commands: the wrappers and cbindgen first.
    fn path_env(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.toolchain_bin(), self.cbindgen_root().join("bin")];
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(dirs).unwrap_or_default()
    }

    /// A command with the build environment: niceness (the machine is
    /// shared), jobs, PATH with the wrappers, no inherited RUSTFLAGS, and
    /// none of the variables `cargo run` sets for redox-e2e that name its own
    /// toolchain's programs: relibc's Makefile runs `$(CARGO)`, which must be
    /// rustup's `cargo` honouring the step's toolchain, not the stable cargo
    /// that started this process.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nice");
        c.args(["-n", "10", program])
            .env("PATH", self.path_env())
            .env("CARGO_BUILD_JOBS", self.jobs.to_string())
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTDOC")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        c
    }

    /// Runs `f` to build `dest` unless it is already there; prints progress.
    fn cached(
        &self,
        step: &str,
        dest: &Path,
        f: impl FnOnce(&Path) -> Result<(), RedoxError>,
    ) -> Result<PathBuf, RedoxError> {
        if dest.join(".done").is_file() {
            progress(format!("{step}: cached ({})", dest.display()));
            return Ok(dest.to_path_buf());
        }
        progress(format!(
            "{step}: building (log: {})",
            self.log(step).display()
        ));
        let started = Instant::now();
        let staged = Staged::new(dest)?;
        f(&staged.tmp)?;
        fs::write(staged.tmp.join(".done"), b"")
            .map_err(RedoxError::io(format!("write {}", staged.tmp.display())))?;
        let out = staged.commit()?;
        progress(format!(
            "{step}: done in {:.0} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(out)
    }

    // ---- host tools and toolchains -----------------------------------------

    /// Host commands that are missing.
    pub fn missing_host_tools() -> Vec<(&'static str, &'static str)> {
        HOST_TOOLS
            .iter()
            .copied()
            .filter(|(cmd, _)| !have(cmd))
            .collect()
    }

    /// Installs the pinned Rust toolchains (rustup) and cbindgen (cargo
    /// install into the cache). A failure here means the toolchains cannot
    /// be obtained: the run is reported as not run, not as failed.
    pub fn toolchains(&self) -> Result<(), RedoxError> {
        let tc = &self.pins.toolchains;
        let installed = output(Command::new("rustup").args(["toolchain", "list"]))
            .map_err(RedoxError::Unavailable)?;
        let has = |name: &str| installed.lines().any(|l| l.starts_with(name));
        for nightly in [&tc.kernel, &tc.relibc] {
            if !has(nightly) {
                progress(format!("rustup: installing {nightly} with rust-src"));
                run_logged(
                    Command::new("rustup").args([
                        "toolchain",
                        "install",
                        nightly,
                        "--profile",
                        "minimal",
                        "--component",
                        "rust-src",
                    ]),
                    "toolchains",
                    &self.log("toolchains"),
                )
                .map_err(|e| {
                    RedoxError::Unavailable(format!("rustup could not install {nightly}: {e}"))
                })?;
            }
        }
        if !has(&tc.userspace) {
            progress(format!("rustup: installing {}", tc.userspace));
            run_logged(
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    &tc.userspace,
                    "--profile",
                    "minimal",
                ]),
                "toolchains",
                &self.log("toolchains"),
            )
            .map_err(|e| {
                RedoxError::Unavailable(format!("rustup could not install {}: {e}", tc.userspace))
            })?;
        }
        let targets = output(Command::new("rustup").args([
            "target",
            "list",
            "--installed",
            "--toolchain",
            &tc.userspace,
        ]))
        .map_err(RedoxError::Unavailable)?;
        if !targets.lines().any(|l| l.trim() == REDOX_TARGET) {
            progress(format!(
                "rustup: adding the {REDOX_TARGET} standard library to {}",
                tc.userspace
            ));
            run_logged(
                Command::new("rustup").args([
                    "target",
                    "add",
                    REDOX_TARGET,
                    "--toolchain",
                    &tc.userspace,
                ]),
                "toolchains",
                &self.log("toolchains"),
            )
            .map_err(|e| {
                RedoxError::Unavailable(format!(
                    "rustup could not add the {REDOX_TARGET} standard library: {e}"
                ))
            })?;
        }
        let cbindgen = self.cbindgen_root().join("bin").join("cbindgen");
        if !cbindgen.is_file() {
            progress(format!(
                "cargo install cbindgen {} (relibc's header generator)",
                tc.cbindgen
            ));
            run_logged(
                self.command("cargo")
                    .args(["install", "--locked", "--quiet", "cbindgen", "--version"])
                    .arg(&tc.cbindgen)
                    .arg("--root")
                    .arg(self.cbindgen_root())
                    .env("CARGO_TARGET_DIR", self.target_dir("cbindgen")),
                "toolchains",
                &self.log("toolchains"),
            )
            .map_err(|e| RedoxError::Unavailable(format!("cannot install cbindgen: {e}")))?;
        }
        self.write_wrappers()
    }

    /// Writes the `x86_64-unknown-redox-*` tools the Redox builds call:
    /// Debian's clang/lld/llvm stand in for Redox's GCC cross toolchain.
    ///
    /// clang knows no Redox OS, so compiling passes `__redox__`/`__ELF__`
    /// itself, and linking goes through clang's Linux driver with relibc's
    /// start files, relibc and the unwinder stand-in — never through a
    /// `<triple>-gcc`, which would be this wrapper again.
    fn write_wrappers(&self) -> Result<(), RedoxError> {
        let bin = self.toolchain_bin();
        fs::create_dir_all(&bin).map_err(RedoxError::io(format!("create {}", bin.display())))?;
        let gcc = r#"#!/bin/sh
# x86_64-unknown-redox C compiler and linker on Debian's clang and lld
# (written by redox-e2e). REDOX_SYSROOT names relibc's sysroot.
SYSROOT=${REDOX_SYSROOT:?REDOX_SYSROOT is not set}
for arg in "$@"; do
  case "$arg" in
    -c|-E|-S|-M|-MM|--version|-dumpmachine|-print-*)
      exec clang --target=x86_64-unknown-redox -D__redox__ -D__ELF__ -nostdinc \
        -isystem "$SYSROOT/include" -isystem "$(clang -print-resource-dir)/include" "$@" ;;
  esac
done
exec clang --target=x86_64-unknown-linux-gnu --sysroot=/nonexistent -fuse-ld=lld \
  -nostdlib -static -no-pie "$SYSROOT/lib/crt0.o" "$SYSROOT/lib/crti.o" "$@" \
  -L"$SYSROOT/lib" -lc -lgcc_eh "$SYSROOT/lib/crtn.o"
"#;
        let write_exe = |name: &str, body: &str| -> Result<(), RedoxError> {
            use std::os::unix::fs::PermissionsExt as _;
            let p = bin.join(name);
            fs::write(&p, body).map_err(RedoxError::io(format!("write {}", p.display())))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                .map_err(RedoxError::io(format!("chmod {}", p.display())))
        };
        write_exe("x86_64-unknown-redox-gcc", gcc)?;
        write_exe(
            "x86_64-unknown-redox-cc",
            "#!/bin/sh\nexec x86_64-unknown-redox-gcc \"$@\"\n",
        )?;
        for (name, tool) in [
            ("ar", "llvm-ar"),
            ("nm", "llvm-nm"),
            ("objcopy", "llvm-objcopy"),
            ("ranlib", "llvm-ranlib"),
            ("strip", "llvm-strip"),
            ("ld", "ld.lld"),
        ] {
            write_exe(
                &format!("x86_64-unknown-redox-{name}"),
                &format!("#!/bin/sh\nexec {tool} \"$@\"\n"),
            )?;
        }
        Ok(())
    }

    // ---- sources -------------------------------------------------------------

    fn archive_for(&self, source: &Source) -> Result<PathBuf, RedoxError> {
        if let Some(dir) = &self.redox_src {
            let local = dir.join(source.archive_name());
            if local.is_file() {
                return Ok(local);
            }
        }
        let downloads = self.cache.join("downloads");
        let file = downloads.join(source.archive_name());
        if file.is_file() {
            return Ok(file);
        }
        fs::create_dir_all(&downloads)
            .map_err(RedoxError::io(format!("create {}", downloads.display())))?;
        let url = source.download_url();
        progress(format!(
            "downloading {} at {} from {url}",
            source.name, source.commit
        ));
        if !have("curl") {
            return Err(RedoxError::Unavailable(format!(
                "no local archive {} and curl is not installed to download {url}",
                source.archive_name()
            )));
        }
        let partial = file.with_extension("partial");
        output(
            Command::new("curl")
                .args(["-fsSL", "--retry", "2", "--connect-timeout", "20", "-o"])
                .arg(&partial)
                .arg(&url),
        )
        .map_err(|e| {
            RedoxError::Unavailable(format!(
                "source {} is not in {} and cannot be downloaded: {e}",
                source.name,
                self.redox_src
                    .as_ref()
                    .map_or("REDOX_SRC (unset)".to_string(), |d| d.display().to_string())
            ))
        })?;
        fs::rename(&partial, &file)
            .map_err(RedoxError::io(format!("rename {}", file.display())))?;
        Ok(file)
    }

    fn sources_dir(&self) -> PathBuf {
        self.cache.join(format!("src-{}", self.sources_key))
    }

    /// Finds (or downloads) every pinned source's archive. Done first, so
    /// that a source that cannot be obtained is reported as such, before any
    /// toolchain is installed; nothing is looked up when the unpacked
    /// sources are cached.
    pub fn locate_sources(&self) -> Result<Vec<(Source, PathBuf)>, RedoxError> {
        if self.sources_dir().join(".done").is_file() {
            return Ok(Vec::new());
        }
        self.pins
            .sources
            .iter()
            .map(|s| self.archive_for(s).map(|a| (s.clone(), a)))
            .collect()
    }

    /// Unpacks and patches every pinned source into one directory.
    pub fn sources(&self, archives: &[(Source, PathBuf)]) -> Result<PathBuf, RedoxError> {
        let dest = self.sources_dir();
        let log = self.log("sources");
        self.cached("sources", &dest, |tmp| {
            for (source, archive) in archives {
                let into = tmp.join(&source.dest);
                // A nested destination (kernel/rmm) replaces the empty
                // submodule directory of its parent.
                let _ = fs::remove_dir_all(&into);
                fs::create_dir_all(&into)
                    .map_err(RedoxError::io(format!("create {}", into.display())))?;
                let local = self
                    .redox_src
                    .as_ref()
                    .is_some_and(|d| archive.starts_with(d));
                let mut tar = Command::new("tar");
                tar.arg("-xzf").arg(archive).arg("-C").arg(&into);
                if !local {
                    // Downloads carry one top-level directory.
                    tar.arg("--strip-components=1");
                }
                run_logged(&mut tar, "sources", &log)?;
                if let Some(patch) = &source.patch {
                    run_logged(
                        Command::new("patch")
                            .args(["-p1", "--forward", "--batch", "--quiet", "-d"])
                            .arg(&into)
                            .arg("-i")
                            .arg(self.pins.patch_path(patch)),
                        "sources",
                        &log,
                    )?;
                }
            }
            Ok(())
        })
    }

    // ---- Redox parts ---------------------------------------------------------

    fn out_dir(&self, step: &str, parts: &[&str]) -> Result<PathBuf, RedoxError> {
        let mut all = vec![RECIPE, step, self.sources_key.as_str()];
        all.extend_from_slice(parts);
        Ok(self
            .cache
            .join("build")
            .join(format!("{step}-{}", key_of(&all))))
    }

    /// The kernel: `cargo rustc` with the kernel's own target and linker
    /// script, then stripped.
    pub fn kernel(&self, src: &Path) -> Result<PathBuf, RedoxError> {
        let tc = &self.pins.toolchains.kernel;
        let dest = self.out_dir("kernel", &[tc])?;
        let k = src.join("kernel");
        let log = self.log("kernel");
        let target = self.target_dir("kernel");
        let dir = self.cached("kernel", &dest, |tmp| {
            let all = tmp.join("kernel.all");
            run_logged(
                self.command("cargo")
                    .arg(format!("+{tc}"))
                    .args(["rustc", "--bin", "kernel", "--release"])
                    .arg("--manifest-path")
                    .arg(k.join("Cargo.toml"))
                    .arg("--target")
                    .arg(k.join("targets/x86_64-unknown-kernel.json"))
                    .args([
                        "-Zbuild-std=core,alloc",
                        "-Zbuild-std-features=compiler-builtins-mem",
                        "--",
                        "-Clink-arg=-T",
                    ])
                    .arg(format!(
                        "-Clink-arg={}",
                        k.join("linkers/x86_64.ld").display()
                    ))
                    .args(["-Clink-arg=-z", "-Clink-arg=max-page-size=0x1000", "--emit"])
                    .arg(format!("link={}", all.display()))
                    .env("RUST_TARGET_PATH", k.join("targets"))
                    .env("CARGO_TARGET_DIR", &target)
                    .current_dir(&k),
                "kernel",
                &log,
            )?;
            run_logged(
                Command::new("objcopy")
                    .arg("--strip-debug")
                    .arg(&all)
                    .arg(tmp.join("kernel")),
                "kernel",
                &log,
            )?;
            fs::remove_file(&all).map_err(RedoxError::io("remove kernel.all"))
        })?;
        Ok(dir.join("kernel"))
    }

    /// The BIOS bootloader: the Rust stage as an i686 static library, linked
    /// with GNU ld, then wrapped by the assembly stages with nasm.
    pub fn bootloader(&self, src: &Path) -> Result<PathBuf, RedoxError> {
        let tc = &self.pins.toolchains.kernel;
        let dest = self.out_dir("bootloader", &[tc])?;
        let b = src.join("bootloader");
        let log = self.log("bootloader");
        let target = self.target_dir("bootloader");
        let dir = self.cached("bootloader", &dest, |tmp| {
            let lib = tmp.join("libbootloader.a");
            let elf = tmp.join("bootloader.elf");
            run_logged(
                self.command("cargo")
                    .arg(format!("+{tc}"))
                    .args(["rustc", "--lib", "--release"])
                    .arg("--manifest-path")
                    .arg(b.join("Cargo.toml"))
                    .args([
                        "--target",
                        "x86-unknown-none",
                        "-Zbuild-std=core,alloc",
                        "-Zbuild-std-features=compiler-builtins-mem",
                        "--",
                        "--emit",
                    ])
                    .arg(format!("link={}", lib.display()))
                    .env("RUST_TARGET_PATH", b.join("targets"))
                    .env("RUSTFLAGS", "--cfg aes_force_soft")
                    .env("CARGO_TARGET_DIR", &target)
                    .current_dir(&b),
                "bootloader",
                &log,
            )?;
            run_logged(
                Command::new("ld")
                    .args([
                        "-m",
                        "elf_i386",
                        "--gc-sections",
                        "-z",
                        "max-page-size=0x1000",
                        "-T",
                    ])
                    .arg(b.join("linkers/x86-unknown-none.ld"))
                    .arg("-o")
                    .arg(&elf)
                    .arg(&lib),
                "bootloader",
                &log,
            )?;
            run_logged(
                Command::new("objcopy").arg("--strip-debug").arg(&elf),
                "bootloader",
                &log,
            )?;
            let asm = b.join("asm/x86-unknown-none");
            run_logged(
                Command::new("nasm")
                    .args(["-f", "bin", "-o"])
                    .arg(tmp.join("bootloader.bin"))
                    .arg(format!("-DSTAGE3={}", elf.display()))
                    .arg(format!("-i{}/", asm.display()))
                    .arg(asm.join("bootloader.asm")),
                "bootloader",
                &log,
            )?;
            for f in [&lib, &elf] {
                fs::remove_file(f).map_err(RedoxError::io(format!("remove {}", f.display())))?;
            }
            Ok(())
        })?;
        Ok(dir.join("bootloader.bin"))
    }

    /// relibc as a sysroot (headers, `libc.a`, start files, `libm.a` from
    /// openlibm, empty `libdl`/`libpthread`/`librt`) plus `libgcc_eh.a`, the
    /// unwinder stand-in (`tests/redox/unwind-stubs.c`).
    pub fn relibc(&self, src: &Path) -> Result<PathBuf, RedoxError> {
        let tc = &self.pins.toolchains.relibc;
        let stubs = self
            .image_tool_src
            .parent()
            .map(|d| d.join("unwind-stubs.c"));
        let stubs = stubs.ok_or_else(|| RedoxError::setup("no tests/redox directory"))?;
        let stubs_text = fs::read_to_string(&stubs)
            .map_err(|e| RedoxError::setup(format!("reading {}: {e}", stubs.display())))?;
        let dest = self.out_dir("relibc", &[tc, &self.pins.toolchains.cbindgen, &stubs_text])?;
        let r = src.join("relibc");
        let log = self.log("relibc");
        self.cached("relibc", &dest, |tmp| {
            // relibc's Makefile places its results under its own target dir.
            let target = r.join("target");
            let build = target.join(REDOX_TARGET);
            let rel = build.join("release");
            let make = |args: &[String]| -> Result<(), RedoxError> {
                run_logged(
                    self.command("make")
                        .arg(format!("-j{}", self.jobs))
                        .arg(format!("TARGET={REDOX_TARGET}"))
                        .args(args)
                        .env("RUSTUP_TOOLCHAIN", tc)
                        .env("CARGO_TARGET_DIR", &target)
                        .env("REDOX_SYSROOT", tmp)
                        .current_dir(&r),
                    "relibc",
                    &log,
                )
            };
            make(&["headers".to_string()])?;
            make(
                &["libc.a", "crt0.o", "crti.o", "crtn.o"]
                    .iter()
                    .map(|f| rel.join(f).display().to_string())
                    .collect::<Vec<_>>(),
            )?;
            let lib = tmp.join("lib");
            let inc = tmp.join("include");
            fs::create_dir_all(&lib).map_err(RedoxError::io("create sysroot/lib"))?;
            run_logged(
                Command::new("cp")
                    .arg("-r")
                    .arg(build.join("include"))
                    .arg(&inc),
                "relibc",
                &log,
            )?;
            for f in ["libc.a", "crt0.o", "crti.o", "crtn.o"] {
                copy(&rel.join(f), &lib.join(f))?;
            }
            copy(&build.join("openlibm/libopenlibm.a"), &lib.join("libm.a"))?;
            for empty in ["libdl.a", "libpthread.a", "librt.a"] {
                run_logged(
                    Command::new("llvm-ar").arg("rcs").arg(lib.join(empty)),
                    "relibc",
                    &log,
                )?;
            }
            let obj = tmp.join("unwind-stubs.o");
            run_logged(
                Command::new("clang")
                    .args([
                        "--target=x86_64-unknown-linux-gnu",
                        "-ffreestanding",
                        "-fno-stack-protector",
                        "-O2",
                        "-c",
                    ])
                    .arg(&stubs)
                    .arg("-o")
                    .arg(&obj),
                "relibc",
                &log,
            )?;
            run_logged(
                Command::new("llvm-ar")
                    .arg("crs")
                    .arg(lib.join("libgcc_eh.a"))
                    .arg(&obj),
                "relibc",
                &log,
            )?;
            fs::remove_file(&obj).map_err(RedoxError::io("remove unwind-stubs.o"))
        })
    }

    /// `cargo build` for Redox userspace with the pinned stable toolchain,
    /// rustup's Redox standard library and the linker wrapper.
    pub fn redox_cargo(&self, sysroot: &Path) -> Command {
        let mut c = self.command("cargo");
        c.arg(format!("+{}", self.pins.toolchains.userspace))
            .args(["build", "--release", "--target", REDOX_TARGET])
            .arg("--config")
            .arg(format!(
                "target.{REDOX_TARGET}.linker=\"{}\"",
                self.toolchain_bin()
                    .join("x86_64-unknown-redox-gcc")
                    .display()
            ))
            .args(["--config", "profile.release.panic=\"abort\""])
            .env("REDOX_SYSROOT", sysroot);
        c
    }

    /// base's daemons and drivers ([`BASE_PACKAGES`]). base's own code uses
    /// unstable features (`never_type`, …), so RUSTC_BOOTSTRAP is set for
    /// this build only.
    pub fn base(&self, src: &Path, sysroot: &Path) -> Result<PathBuf, RedoxError> {
        let dest = self.out_dir(
            "base",
            &[
                &self.pins.toolchains.userspace,
                &sysroot.display().to_string(),
            ],
        )?;
        let b = src.join("base");
        let log = self.log("base");
        let target = self.target_dir("base");
        self.cached("base", &dest, |tmp| {
            let mut cmd = self.redox_cargo(sysroot);
            for p in BASE_PACKAGES {
                cmd.args(["-p", p]);
            }
            run_logged(
                cmd.env("RUSTC_BOOTSTRAP", "1")
                    .env("CARGO_TARGET_DIR", &target)
                    .current_dir(&b),
                "base",
                &log,
            )?;
            let rel = target.join(REDOX_TARGET).join("release");
            for p in BASE_PACKAGES {
                copy(&rel.join(p), &tmp.join(p))?;
                strip(&tmp.join(p), "base", &log)?;
            }
            Ok(())
        })
    }

    /// bootstrap (no libc; built with the kernel's nightly and build-std,
    /// linked with its own script).
    pub fn bootstrap(&self, src: &Path) -> Result<PathBuf, RedoxError> {
        let tc = &self.pins.toolchains.kernel;
        let dest = self.out_dir("bootstrap", &[tc])?;
        let b = src.join("base").join("bootstrap");
        let log = self.log("bootstrap");
        let target = self.target_dir("bootstrap");
        let dir = self.cached("bootstrap", &dest, |tmp| {
            run_logged(
                self.command("cargo")
                    .arg(format!("+{tc}"))
                    .args([
                        "build",
                        "--release",
                        "--target",
                        REDOX_TARGET,
                        "-Zbuild-std=core,alloc,compiler_builtins",
                        "-Zbuild-std-features=compiler-builtins-mem",
                    ])
                    .arg("--manifest-path")
                    .arg(b.join("Cargo.toml"))
                    .env("RUSTFLAGS", "-Ctarget-feature=+crt-static")
                    .env("CARGO_TARGET_DIR", &target)
                    .current_dir(&b),
                "bootstrap",
                &log,
            )?;
            run_logged(
                Command::new("ld.lld")
                    .arg("-o")
                    .arg(tmp.join("bootstrap"))
                    .args(["--gc-sections", "-z", "max-page-size=4096", "-T"])
                    .arg(b.join("src/x86_64.ld"))
                    .arg(target.join(REDOX_TARGET).join("release/libbootstrap.a")),
                "bootstrap",
                &log,
            )
        })?;
        Ok(dir.join("bootstrap"))
    }

    /// redoxfs (the file system daemon) for Redox, with its own lock file.
    pub fn redoxfs(&self, src: &Path, sysroot: &Path) -> Result<PathBuf, RedoxError> {
        let dest = self.out_dir(
            "redoxfs",
            &[
                &self.pins.toolchains.userspace,
                &sysroot.display().to_string(),
            ],
        )?;
        let r = src.join("redoxfs");
        let log = self.log("redoxfs");
        let target = self.target_dir("redoxfs");
        let dir = self.cached("redoxfs", &dest, |tmp| {
            run_logged(
                self.redox_cargo(sysroot)
                    .args(["--locked", "--no-default-features", "--features", "std,log"])
                    .args(["--bin", "redoxfs"])
                    .env("CARGO_TARGET_DIR", &target)
                    .current_dir(&r),
                "redoxfs",
                &log,
            )?;
            let bin = tmp.join("redoxfs");
            copy(&target.join(REDOX_TARGET).join("release/redoxfs"), &bin)?;
            strip(&bin, "redoxfs", &log)
        })?;
        Ok(dir.join("redoxfs"))
    }

    /// The host tool (`tests/redox/image-tool`), built next to the sources
    /// it uses as libraries (base's initfs archiver, redoxfs).
    pub fn image_tool(&self, src: &Path) -> Result<PathBuf, RedoxError> {
        let tool_key = key_of_dir(&self.image_tool_src)?;
        let dest = self.out_dir("image-tool", &[&tool_key])?;
        let log = self.log("image-tool");
        let target = self.target_dir("image-tool");
        let dir = self.cached("image-tool", &dest, |tmp| {
            // The tool's manifest names its libraries by paths relative to
            // the source directory, so it is built from a copy placed there.
            let copy_dir = src.join("image-tool");
            let _ = fs::remove_dir_all(&copy_dir);
            run_logged(
                Command::new("cp")
                    .arg("-r")
                    .arg(&self.image_tool_src)
                    .arg(&copy_dir),
                "image-tool",
                &log,
            )?;
            run_logged(
                self.command("cargo")
                    .arg(format!("+{}", self.pins.toolchains.userspace))
                    .args(["build", "--release", "--locked"])
                    .env("CARGO_TARGET_DIR", &target)
                    .current_dir(&copy_dir),
                "image-tool",
                &log,
            )?;
            copy(
                &target.join("release/redox-image-tool"),
                &tmp.join("redox-image-tool"),
            )
        })?;
        Ok(dir.join("redox-image-tool"))
    }

    /// Builds everything from the pinned sources (cached); `archives` from
    /// [`Builder::locate_sources`].
    pub fn build_all(&self, archives: &[(Source, PathBuf)]) -> Result<Artifacts, RedoxError> {
        self.toolchains()?;
        let src = self.sources(archives)?;
        let kernel = self.kernel(&src)?;
        let bootloader = self.bootloader(&src)?;
        let sysroot = self.relibc(&src)?;
        let bootstrap = self.bootstrap(&src)?;
        let base_bin = self.base(&src, &sysroot)?;
        let redoxfs = self.redoxfs(&src, &sysroot)?;
        let image_tool = self.image_tool(&src)?;
        Ok(Artifacts {
            kernel,
            bootloader,
            sysroot,
            bootstrap,
            base_bin,
            redoxfs,
            image_tool,
            toolchain_bin: self.toolchain_bin(),
        })
    }
}

fn strip(path: &Path, step: &str, log: &Path) -> Result<(), RedoxError> {
    run_logged(
        Command::new("llvm-objcopy").arg("--strip-debug").arg(path),
        step,
        log,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_commands_do_not_inherit_the_toolchain_of_cargo_run() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let builder = Builder {
            pins: Pins::load(&repo.join("tests/redox")).unwrap(),
            cache: PathBuf::from("/nonexistent-cache"),
            redox_src: None,
            jobs: 2,
            image_tool_src: PathBuf::new(),
            sources_key: String::new(),
        };
        let c = builder.command("make");
        let removed: Vec<_> = c
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for name in ["CARGO", "RUSTC", "RUSTDOC", "RUSTFLAGS", "RUSTUP_TOOLCHAIN"] {
            assert!(
                removed.iter().any(|r| r == name),
                "{name} kept: {removed:?}"
            );
        }
        let path = c
            .get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v)
            .unwrap();
        let first = std::env::split_paths(path).next().unwrap();
        assert_eq!(first, Path::new("/nonexistent-cache/toolchain/bin"));
    }
}
