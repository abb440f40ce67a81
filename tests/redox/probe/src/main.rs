//! `redox-e2e-probe`: what the booted Redox shows, as `===E2E-PROBE===` lines.
//!
//! ```text
//! redox-e2e-probe schemes                  one line per registered scheme
//! redox-e2e-probe disk PATH                the first sector of a disk: MBR signature
//! redox-e2e-probe read PATH                a small file's bytes in hex (e.g. a NIC's MAC)
//! redox-e2e-probe pci-access SSSS:BB:DD.F  config space read through /scheme/pci/access
//!                                          the way acpid reads it (call requests)
//! redox-e2e-probe ls DIR                   the names in a directory, comma-separated
//! redox-e2e-probe write PATH CONTENT       create PATH and write CONTENT with one
//!                                          write(2), then close it (no fsync): what
//!                                          a program saving a file just before
//!                                          shutdown does
//! redox-e2e-probe kstop                    what Redox's `shutdown` does (coreutils
//!                                          5559e20): write `shutdown` to
//!                                          /scheme/sys/kstop, nothing else
//! ```
//!
//! Every line is `===E2E-PROBE=== what=<what> ok=<true|false> key=value…`;
//! a failure is reported on its line (and in the exit status), never hidden.

use std::process::ExitCode;

const MARK: &str = "===E2E-PROBE===";

fn line(what: &str, result: Result<String, String>) -> bool {
    match result {
        Ok(fields) => {
            println!("{MARK} what={what} ok=true {fields}");
            true
        }
        Err(e) => {
            println!("{MARK} what={what} ok=false error={}", e.replace(' ', "_"));
            false
        }
    }
}

fn schemes() -> bool {
    match std::fs::read_dir("/scheme") {
        Ok(entries) => {
            let mut ok = true;
            for e in entries {
                ok &= line(
                    "scheme",
                    e.map(|e| format!("name={}", e.file_name().to_string_lossy()))
                        .map_err(|e| e.to_string()),
                );
            }
            ok
        }
        Err(e) => line("scheme", Err(format!("/scheme: {e}"))),
    }
}

fn disk(path: &str) -> bool {
    use std::io::Read as _;
    let result = std::fs::File::open(path)
        .and_then(|mut f| {
            let mut sector = [0u8; 512];
            f.read_exact(&mut sector)?;
            Ok(sector)
        })
        .map(|s| format!("path={path} mbr_signature={:02x}{:02x}", s[510], s[511]))
        .map_err(|e| format!("{path}: {e}"));
    line("disk", result)
}

fn read(path: &str) -> bool {
    let result = std::fs::read(path)
        .map(|d| {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("path={path} bytes={} hex={hex}", d.len())
        })
        .map_err(|e| format!("{path}: {e}"));
    line("read", result)
}

/// Parses `SSSS:BB:DD.F`.
fn parse_address(s: &str) -> Option<(u16, u8, u8, u8)> {
    let mut parts = s.split(':');
    let seg = u16::from_str_radix(parts.next()?, 16).ok()?;
    let bus = u8::from_str_radix(parts.next()?, 16).ok()?;
    let (dev, func) = parts.next()?.split_once('.')?;
    Some((
        seg,
        bus,
        u8::from_str_radix(dev, 16).ok()?,
        u8::from_str_radix(func, 16).ok()?,
    ))
}

#[cfg(target_os = "redox")]
fn pci_access(address: &str) -> bool {
    let Some((seg, bus, dev, func)) = parse_address(address) else {
        return line("pci-access", Err(format!("bad address {address}")));
    };
    // acpid's metadata: [1 = read | 2 = write, packed address | offset].
    let packed = |off: u16| {
        (u64::from(seg) << 28)
            | (u64::from(bus) << 20)
            | (u64::from(dev) << 15)
            | (u64::from(func) << 12)
            | u64::from(off)
    };
    let result = (|| {
        let fd = libredox::Fd::open(
            "/scheme/pci/access",
            libredox::flag::O_RDWR | libredox::flag::O_CLOEXEC,
            0,
        )
        .map_err(|e| format!("open /scheme/pci/access: {e}"))?;
        let mut dword = [0u8; 4];
        fd.call_ro(&mut dword, syscall::CallFlags::empty(), &[1, packed(0)])
            .map_err(|e| format!("read 4 bytes at 0: {e}"))?;
        // An unaligned one-byte read (the device id's high byte), as AML does.
        let mut byte = [0u8; 1];
        fd.call_ro(&mut byte, syscall::CallFlags::empty(), &[1, packed(3)])
            .map_err(|e| format!("read 1 byte at 3: {e}"))?;
        // A write of the read-only vendor id must leave it unchanged.
        fd.call_wo(&[0xff, 0xff], syscall::CallFlags::empty(), &[2, packed(0)])
            .map_err(|e| format!("write 2 bytes at 0: {e}"))?;
        let mut again = [0u8; 2];
        fd.call_ro(&mut again, syscall::CallFlags::empty(), &[1, packed(0)])
            .map_err(|e| format!("read 2 bytes at 0: {e}"))?;
        let bad = fd.call_ro(&mut byte, syscall::CallFlags::empty(), &[7, packed(0)]);
        Ok(format!(
            "address={address} vendor={:#06x} device={:#06x} device_high_byte={:#04x} vendor_after_write={:#06x} bad_kind_refused={}",
            u16::from_le_bytes([dword[0], dword[1]]),
            u16::from_le_bytes([dword[2], dword[3]]),
            byte[0],
            u16::from_le_bytes(again),
            bad.is_err()
        ))
    })();
    line("pci-access", result)
}

#[cfg(not(target_os = "redox"))]
fn pci_access(address: &str) -> bool {
    let _ = parse_address(address);
    line("pci-access", Err("Redox only".to_string()))
}

fn ls(dir: &str) -> bool {
    let result = std::fs::read_dir(dir)
        .and_then(|entries| {
            let mut names = entries
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()?;
            names.sort();
            Ok(names)
        })
        .map(|names| format!("path={dir} names={}", names.join(",")))
        .map_err(|e| format!("{dir}: {e}"));
    line("ls", result)
}

fn write(path: &str, content: &str) -> bool {
    use std::io::Write as _;
    let started = std::time::Instant::now();
    let result = std::fs::File::create(path)
        .and_then(|mut f| f.write(content.as_bytes()))
        .map(|n| {
            format!(
                "path={path} bytes={n} ms={:.3}",
                started.elapsed().as_secs_f64() * 1000.0
            )
        })
        .map_err(|e| format!("{path}: {e}"));
    line("write", result)
}

fn kstop() -> bool {
    println!("{MARK} what=kstop ok=true request=shutdown");
    match std::fs::write("/scheme/sys/kstop", "shutdown") {
        Ok(()) => true,
        Err(e) => line("kstop", Err(format!("/scheme/sys/kstop: {e}"))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["schemes"] => schemes(),
        ["disk", path] => disk(path),
        ["read", path] => read(path),
        ["pci-access", address] => pci_access(address),
        ["ls", dir] => ls(dir),
        ["write", path, content] => write(path, content),
        ["kstop"] => kstop(),
        _ => {
            eprintln!(
                "usage: redox-e2e-probe schemes | disk PATH | read PATH | pci-access SSSS:BB:DD.F \
                 | ls DIR | write PATH CONTENT | kstop"
            );
            return ExitCode::from(2);
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
