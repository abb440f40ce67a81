//! `redox-image-tool`: the image files of the Redox boot test.
//!
//! ```text
//! redox-image-tool initfs DIR BOOTSTRAP OUT
//!     pack DIR into a Redox initfs image, bootstrap code first
//! redox-image-tool redoxfs DIR OUT [SIZE_MIB]
//!     make a RedoxFS holding DIR's files; without SIZE_MIB the image is cut
//!     to what the files need, with it the image keeps that size
//! redox-image-tool cat IMAGE PATH
//!     print a file of the RedoxFS in IMAGE (whole disk or partition)
//! ```
//!
//! The formats are the pinned base's and redoxfs's own: this tool calls
//! their libraries and adds only the command line.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: redox-image-tool initfs DIR BOOTSTRAP OUT | redoxfs DIR OUT [SIZE_MIB] | cat IMAGE PATH";

/// Largest initfs the archiver may write.
const INITFS_MAX: u64 = 256 << 20;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["initfs", dir, bootstrap, out] => initfs(dir, bootstrap, out),
        ["redoxfs", dir, out] => redoxfs(dir, out, None),
        ["redoxfs", dir, out, size] => size
            .parse::<u64>()
            .map_err(|_| format!("SIZE_MIB {size:?} is not a number"))
            .and_then(|mib| redoxfs(dir, out, Some(mib << 20))),
        ["cat", image, path] => cat(image, path),
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redox-image-tool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn initfs(dir: &str, bootstrap: &str, out: &str) -> Result<(), String> {
    // The archiver wants an existing (or absent) regular file.
    let _ = fs::remove_file(out);
    fs::write(out, b"").map_err(|e| format!("create {out}: {e}"))?;
    archive_common::archive(&archive_common::Args {
        destination_path: Path::new(out),
        max_size: INITFS_MAX,
        source: Path::new(dir),
        bootstrap_code: Some(Path::new(bootstrap)),
    })
    .map_err(|e| format!("packing {dir} into {out}: {e:#}"))
}

fn redoxfs(dir: &str, out: &str, size: Option<u64>) -> Result<(), String> {
    let _ = fs::remove_file(out);
    let file = fs::File::create(out).map_err(|e| format!("create {out}: {e}"))?;
    // Room to build in; cut back afterwards unless a size was asked for.
    file.set_len(size.unwrap_or(1 << 30))
        .map_err(|e| format!("size {out}: {e}"))?;
    drop(file);
    let disk = redoxfs::DiskFile::open(out).map_err(|e| format!("open {out}: {e}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let mut fs = redoxfs::FileSystem::create(disk, None, now.as_secs(), now.subsec_nanos())
        .map_err(|e| format!("create a RedoxFS in {out}: {e}"))?;
    let used = redoxfs::archive(&mut fs, dir).map_err(|e| format!("copy {dir} into {out}: {e}"))?;
    if size.is_none() {
        fs.disk
            .file
            .set_len(used)
            .map_err(|e| format!("truncate {out}: {e}"))?;
    }
    let uuid = fs.header.uuid();
    println!("uuid {}", format_uuid(&uuid));
    Ok(())
}

fn format_uuid(b: &[u8; 16]) -> String {
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

fn cat(image: &str, path: &str) -> Result<(), String> {
    // Read a private copy: opening a RedoxFS writes to it. The file system
    // is found wherever its header ring starts (a whole-disk RedoxFS, or
    // one inside a partition).
    let copy = std::env::temp_dir().join(format!("redox-image-tool-{}.img", std::process::id()));
    fs::copy(image, &copy).map_err(|e| format!("copy {image}: {e}"))?;
    let result = (|| {
        let disk = redoxfs::DiskFile::open(&copy).map_err(|e| format!("open {image}: {e}"))?;
        let mut fs = redoxfs::FileSystem::open(disk, None, None, false)
            .map_err(|e| format!("no RedoxFS in {image}: {e}"))?;
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return Err(format!("{path:?} names no file"));
        }
        let data = fs
            .tx(|tx| {
                let mut ptr = redoxfs::TreePtr::root();
                let mut size = 0;
                for part in &parts {
                    let node = tx.find_node(ptr, part)?;
                    ptr = node.ptr();
                    size = node.data().size();
                }
                let mut buf = vec![0u8; size as usize];
                let mut done = 0usize;
                while done < buf.len() {
                    let n = tx.read_node(ptr, done as u64, &mut buf[done..], 0, 0)?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                buf.truncate(done);
                Ok(buf)
            })
            .map_err(|e| format!("{path} in {image}: {e}"))?;
        std::io::stdout()
            .write_all(&data)
            .map_err(|e| format!("write: {e}"))
    })();
    let _ = fs::remove_file(&copy);
    result
}
