//! A writer for the `newc` cpio format the Linux kernel unpacks as initramfs
//! (Linux `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (`070701` then thirteen 8-digit hex
//! fields), the NUL-terminated name padded to a multiple of 4 bytes, then the
//! data padded to a multiple of 4 bytes. The archive ends with an entry named
//! `TRAILER!!!`. Device nodes are plain entries with `rdevmajor`/`rdevminor`
//! set, so no `mknod` (and no root) is needed to put `/dev/console` in.

use std::io::{self, Write};

/// File-type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFLNK: u32 = 0o120000;

/// Builds a newc archive in memory.
#[derive(Debug, Default)]
pub struct CpioWriter {
    out: Vec<u8>,
    next_ino: u32,
    finished: bool,
}

/// A name that cannot go into the archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad archive path {0:?}: must be relative, non-empty, without NUL, '.' or '..' parts")]
pub struct BadPath(pub String);

impl CpioWriter {
    /// An empty archive.
    pub fn new() -> Self {
        Self {
            out: Vec::new(),
            next_ino: 1,
            finished: false,
        }
    }

    /// Adds a directory (`path` relative to the archive root, e.g. `dev`).
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), BadPath> {
        self.entry(path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), BadPath> {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a character device node.
    pub fn char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), BadPath> {
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), BadPath> {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Appends the trailer and returns the archive bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.trailer();
        self.out
    }

    /// Writes the finished archive to `w`.
    pub fn write_to(self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.finish())
    }

    fn trailer(&mut self) {
        if !self.finished {
            self.raw_entry("TRAILER!!!", 0, 0, 1, (0, 0), &[]);
            self.finished = true;
        }
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<(), BadPath> {
        let bad = || BadPath(path.to_string());
        if path.is_empty()
            || path.starts_with('/')
            || path.contains('\0')
            || path
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            || path == "TRAILER!!!"
        {
            return Err(bad());
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(path, ino, mode, nlink, rdev, data);
        Ok(())
    }

    fn raw_entry(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) {
        // Sizes above 4 GiB cannot be expressed in newc; initramfs contents are far smaller.
        let filesize = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let namesize = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, // uid
            0, // gid
            nlink, 0, // mtime
            filesize, 0, // devmajor
            0, // devminor
            rdev.0, rdev.1, namesize, 0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed entry: name, mode, rdev, data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// A strict reader written from the format description, to check the writer.
    fn parse(mut a: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let total = a.len();
        loop {
            assert_eq!((total - a.len()) % 4, 0, "entry aligned");
            assert_eq!(&a[..6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name_end = 110 + namesize as usize;
            assert_eq!(a[name_end - 1], 0, "name NUL-terminated");
            let name = std::str::from_utf8(&a[110..name_end - 1])
                .unwrap()
                .to_string();
            let data_start = name_end.div_ceil(4) * 4;
            let data = a[data_start..data_start + size as usize].to_vec();
            let next = (data_start + size as usize).div_ceil(4) * 4;
            a = &a[next..];
            if name == "TRAILER!!!" {
                assert!(a.is_empty(), "nothing after the trailer");
                return out;
            }
            out.push((name, mode, (rmaj, rmin), data));
        }
    }

    #[test]
    fn entries_round_trip_with_alignment() {
        let mut w = CpioWriter::new();
        w.dir("dev", 0o755).unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"#!x").unwrap();
        w.file("lib/a.toml", 0o644, &[7u8; 5]).unwrap();
        w.symlink("bin/sh", "/init").unwrap();
        let entries = parse(&w.finish());
        assert_eq!(
            entries,
            vec![
                ("dev".into(), 0o040755, (0, 0), vec![]),
                ("dev/console".into(), 0o020600, (5, 1), vec![]),
                ("init".into(), 0o100755, (0, 0), b"#!x".to_vec()),
                ("lib/a.toml".into(), 0o100644, (0, 0), vec![7; 5]),
                ("bin/sh".into(), 0o120777, (0, 0), b"/init".to_vec()),
            ]
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut w = CpioWriter::new();
        for p in ["", "/init", "a//b", "../x", "a/./b", "TRAILER!!!", "a\0b"] {
            assert_eq!(w.file(p, 0o644, b""), Err(BadPath(p.to_string())));
        }
        assert_eq!(parse(&w.finish()), vec![]);
    }
}
