//! The namespace's storage: a backing medium (file or memory) and an optional
//! volatile write cache in front of it.
//!
//! With the cache enabled, a Write lands only in the cache; the medium sees it
//! on Flush, on completion of a normal shutdown, or when the cache is disabled
//! through Set Features. A power cut or an abrupt shutdown discards the cache.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::config::SimConfig;
use crate::SimError;

enum Medium {
    /// Sparse in-memory blocks; absent blocks read as zeroes.
    Memory(HashMap<u64, Box<[u8]>>),
    File {
        file: File,
        path: PathBuf,
    },
}

pub(crate) struct Store {
    medium: Medium,
    block_size: usize,
    blocks: u64,
    cache_enabled: bool,
    cache: BTreeMap<u64, Box<[u8]>>,
}

impl Store {
    pub(crate) fn open(config: &SimConfig) -> Result<Self, SimError> {
        let medium = match &config.backing_file {
            None => Medium::Memory(HashMap::new()),
            Some(path) => Medium::File {
                file: open_backing(path, config.namespace_bytes()).map_err(|source| {
                    SimError::Backing {
                        path: path.clone(),
                        source,
                    }
                })?,
                path: path.clone(),
            },
        };
        Ok(Self {
            medium,
            block_size: config.block_size as usize,
            blocks: config.namespace_blocks,
            cache_enabled: config.volatile_write_cache,
            cache: BTreeMap::new(),
        })
    }

    pub(crate) fn block_size(&self) -> usize {
        self.block_size
    }

    pub(crate) fn blocks(&self) -> u64 {
        self.blocks
    }

    pub(crate) fn cache_enabled(&self) -> bool {
        self.cache_enabled
    }

    pub(crate) fn dirty_blocks(&self) -> usize {
        self.cache.len()
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.medium {
            Medium::File { path, .. } => Some(path),
            Medium::Memory(_) => None,
        }
    }

    /// Whether `count` blocks from `lba` lie inside the namespace.
    pub(crate) fn in_range(&self, lba: u64, count: u64) -> bool {
        lba.checked_add(count).is_some_and(|end| end <= self.blocks)
    }

    fn range_check(&self, lba: u64, count: u64) -> io::Result<()> {
        if self.in_range(lba, count) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "blocks {lba}+{count} outside namespace of {} blocks",
                    self.blocks
                ),
            ))
        }
    }

    fn read_medium_block(&self, lba: u64, out: &mut [u8]) -> io::Result<()> {
        match &self.medium {
            Medium::Memory(m) => {
                match m.get(&lba) {
                    Some(b) => out.copy_from_slice(b),
                    None => out.fill(0),
                }
                Ok(())
            }
            Medium::File { file, .. } => file.read_exact_at(out, lba * self.block_size as u64),
        }
    }

    fn write_medium_block(&mut self, lba: u64, data: &[u8]) -> io::Result<()> {
        let bs = self.block_size as u64;
        match &mut self.medium {
            Medium::Memory(m) => {
                m.insert(lba, data.into());
                Ok(())
            }
            Medium::File { file, .. } => file.write_all_at(data, lba * bs),
        }
    }

    fn sync_medium(&self) -> io::Result<()> {
        match &self.medium {
            Medium::Memory(_) => Ok(()),
            Medium::File { file, .. } => file.sync_data(),
        }
    }

    /// Reads `out.len() / block_size` blocks from `lba` as a Read command sees
    /// them (cache over medium).
    pub(crate) fn read(&self, lba: u64, out: &mut [u8]) -> io::Result<()> {
        let bs = self.block_size;
        self.range_check(lba, (out.len() / bs) as u64)?;
        for (i, chunk) in out.chunks_exact_mut(bs).enumerate() {
            let l = lba + i as u64;
            match self.cache.get(&l) {
                Some(b) => chunk.copy_from_slice(b),
                None => self.read_medium_block(l, chunk)?,
            }
        }
        Ok(())
    }

    /// Reads blocks from the medium only: what survives a power cut.
    pub(crate) fn read_durable(&self, lba: u64, out: &mut [u8]) -> io::Result<()> {
        let bs = self.block_size;
        self.range_check(lba, (out.len() / bs) as u64)?;
        for (i, chunk) in out.chunks_exact_mut(bs).enumerate() {
            self.read_medium_block(lba + i as u64, chunk)?;
        }
        Ok(())
    }

    /// Writes whole blocks from `data` at `lba`. With the cache enabled and
    /// `fua` false the data stays in the cache.
    pub(crate) fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> io::Result<()> {
        let bs = self.block_size;
        self.range_check(lba, (data.len() / bs) as u64)?;
        for (i, chunk) in data.chunks_exact(bs).enumerate() {
            let l = lba + i as u64;
            if self.cache_enabled && !fua {
                self.cache.insert(l, chunk.into());
            } else {
                self.cache.remove(&l);
                self.write_medium_block(l, chunk)?;
            }
        }
        if fua || !self.cache_enabled {
            // Write-through: the data is durable when the command completes.
            self.sync_medium()?;
        }
        Ok(())
    }

    /// Writes every cached block to the medium and makes it durable.
    pub(crate) fn flush(&mut self) -> io::Result<usize> {
        let n = self.cache.len();
        while let Some((lba, block)) = self.cache.pop_first() {
            if let Err(e) = self.write_medium_block(lba, &block) {
                // Keep the block dirty so nothing is silently lost.
                self.cache.insert(lba, block);
                return Err(e);
            }
        }
        self.sync_medium()?;
        Ok(n)
    }

    /// Drops every cached block (power loss). Returns how many were lost.
    pub(crate) fn discard_cache(&mut self) -> usize {
        let n = self.cache.len();
        self.cache.clear();
        n
    }

    /// Enables or disables the write cache (Set Features, Volatile Write
    /// Cache); disabling writes the cache back first.
    pub(crate) fn set_cache_enabled(&mut self, enabled: bool) -> io::Result<()> {
        if !enabled {
            self.flush()?;
        }
        self.cache_enabled = enabled;
        Ok(())
    }
}

fn open_backing(path: &Path, size: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if file.metadata()?.len() < size {
        file.set_len(size)?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cache: bool) -> SimConfig {
        SimConfig {
            namespace_blocks: 16,
            volatile_write_cache: cache,
            ..SimConfig::default()
        }
    }

    #[test]
    fn cache_holds_writes_until_flush() {
        let mut s = Store::open(&config(true)).unwrap();
        s.write(3, &[7u8; 1024], false).unwrap();
        let mut seen = [0u8; 1024];
        s.read(3, &mut seen).unwrap();
        assert_eq!(seen, [7u8; 1024]);
        s.read_durable(3, &mut seen).unwrap();
        assert_eq!(seen, [0u8; 1024]);
        assert_eq!(s.dirty_blocks(), 2);
        assert_eq!(s.flush().unwrap(), 2);
        s.read_durable(3, &mut seen).unwrap();
        assert_eq!(seen, [7u8; 1024]);
    }

    #[test]
    fn discard_loses_cached_writes_and_fua_bypasses() {
        let mut s = Store::open(&config(true)).unwrap();
        s.write(0, &[1u8; 512], false).unwrap();
        s.write(1, &[2u8; 512], true).unwrap();
        assert_eq!(s.discard_cache(), 1);
        let mut b = [0u8; 1024];
        s.read(0, &mut b).unwrap();
        assert_eq!(&b[..512], &[0u8; 512]);
        assert_eq!(&b[512..], &[2u8; 512]);
    }

    #[test]
    fn file_medium_is_created_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.img");
        let c = SimConfig {
            backing_file: Some(path.clone()),
            ..config(false)
        };
        let mut s = Store::open(&c).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 * 512);
        s.write(15, &[0xabu8; 512], false).unwrap();
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(&raw[15 * 512..], &[0xabu8; 512]);
        assert!(s.write(16, &[0u8; 512], false).is_err());
        assert!(s.read(15, &mut [0u8; 1024]).is_err());
    }

    #[test]
    fn unopenable_backing_file_is_a_typed_error() {
        let c = SimConfig {
            backing_file: Some("/nonexistent-dir/x/ns.img".into()),
            ..config(false)
        };
        assert!(matches!(Store::open(&c), Err(SimError::Backing { .. })));
    }
}
