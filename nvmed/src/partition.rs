//! Partition tables as Redox's disk drivers read them (`partitionlib` of
//! Redox base 6091b4662, used by `driver-block`): GPT first, then MBR.
//!
//! * **GPT** (UEFI Specification 2.10, §5.3): the header in logical block 1
//!   (`EFI PART`, header and entry-array CRC32s checked), entries of 128 bytes
//!   or a larger power-of-two multiple; an entry whose type GUID is all zeros
//!   is unused. Partitions are numbered 0, 1, … in entry order, unused
//!   entries skipped — the numbering consumers see as `<ns>p<n>`.
//! * **MBR**: the 512 bytes at offset 0 ending in `55 AA`; of its four
//!   entries those whose status byte is 0x00 or 0x80 and whose sector count
//!   is not 0, in table order. Extended partitions are not followed (Redox
//!   does not follow them either).
//!
//! As in Redox, only logical block sizes of 512 and 4096 bytes carry a
//! partition table, and start and size are counted in logical blocks.
//! Parsing never panics on any input; a table that does not check out is no
//! table (a GPT that fails its checks falls back to the MBR, as in Redox).

/// One partition: where it starts and how long it is, in logical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// First logical block.
    pub start: u64,
    /// Length in logical blocks.
    pub blocks: u64,
}

/// Which kind of table the partitions came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// GUID Partition Table.
    Gpt,
    /// Master Boot Record.
    Mbr,
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// GPT or MBR.
    pub kind: TableKind,
    /// The partitions, numbered by their index here.
    pub partitions: Vec<Partition>,
}

/// The most GPT entries looked at (the usual array has 128).
pub const MAX_GPT_ENTRIES: u32 = 1024;

const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
const GPT_MIN_HEADER: usize = 92;
const GPT_MIN_ENTRY: usize = 128;

/// CRC-32 (IEEE 802.3, reflected, as GPT uses it).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Reads the partition table of a disk of `block_size`-byte blocks through
/// `read(offset, buf)` (byte offsets; fills `buf` completely or fails).
/// `Ok(None)`: no table (or a block size Redox reads none for).
pub fn read_table<E>(
    block_size: u32,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<Option<PartitionTable>, E> {
    if block_size != 512 && block_size != 4096 {
        return Ok(None);
    }
    if let Some(t) = read_gpt(block_size, &mut read)? {
        return Ok(Some(t));
    }
    let mut mbr = [0u8; 512];
    read(0, &mut mbr)?;
    Ok(parse_mbr(&mbr))
}

fn read_gpt<E>(
    block_size: u32,
    read: &mut impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<Option<PartitionTable>, E> {
    let bs = u64::from(block_size);
    let mut header = vec![0u8; block_size as usize];
    read(bs, &mut header)?;
    let Some(h) = GptHeader::parse(&header) else {
        return Ok(None);
    };
    let Some(len) = h.array_len() else {
        return Ok(None);
    };
    let Some(offset) = h.entry_lba.checked_mul(bs) else {
        return Ok(None);
    };
    let mut array = vec![0u8; len];
    read(offset, &mut array)?;
    Ok(h.partitions(&array))
}

struct GptHeader {
    entry_lba: u64,
    entries: u32,
    entry_size: u32,
    array_crc: u32,
}

impl GptHeader {
    fn parse(block: &[u8]) -> Option<Self> {
        if block.get(..8)? != GPT_SIGNATURE {
            return None;
        }
        let size = usize::try_from(u32_at(block, 12)?).ok()?;
        if size < GPT_MIN_HEADER || size > block.len() {
            return None;
        }
        let mut copy = block[..size].to_vec();
        copy[16..20].fill(0);
        if crc32(&copy) != u32_at(block, 16)? {
            return None;
        }
        let entries = u32_at(block, 80)?;
        let entry_size = u32_at(block, 84)?;
        let sane_size = entry_size as usize >= GPT_MIN_ENTRY
            && entry_size.is_power_of_two()
            && entry_size <= 4096;
        if entries == 0 || entries > MAX_GPT_ENTRIES || !sane_size {
            return None;
        }
        Some(Self {
            entry_lba: u64_at(block, 72)?,
            entries,
            entry_size,
            array_crc: u32_at(block, 88)?,
        })
    }

    fn array_len(&self) -> Option<usize> {
        (self.entries as usize).checked_mul(self.entry_size as usize)
    }

    fn partitions(&self, array: &[u8]) -> Option<PartitionTable> {
        if crc32(array) != self.array_crc {
            return None;
        }
        let partitions = array
            .chunks_exact(self.entry_size as usize)
            .filter(|e| e[..16].iter().any(|&b| b != 0))
            .filter_map(|e| {
                let first = u64_at(e, 32)?;
                let last = u64_at(e, 40)?;
                let blocks = last.checked_sub(first)?.checked_add(1)?;
                Some(Partition {
                    start: first,
                    blocks,
                })
            })
            .collect();
        Some(PartitionTable {
            kind: TableKind::Gpt,
            partitions,
        })
    }
}

/// Parses an MBR (its first 512 bytes).
pub fn parse_mbr(sector: &[u8; 512]) -> Option<PartitionTable> {
    if sector[510..512] != [0x55, 0xAA] {
        return None;
    }
    let partitions = (0..4)
        .map(|i| &sector[446 + 16 * i..446 + 16 * (i + 1)])
        .filter(|e| (e[0] == 0x00 || e[0] == 0x80) && u32_at(e, 12) != Some(0))
        .filter_map(|e| {
            Some(Partition {
                start: u64::from(u32_at(e, 8)?),
                blocks: u64::from(u32_at(e, 12)?),
            })
        })
        .collect();
    Some(PartitionTable {
        kind: TableKind::Mbr,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MBR with the given (status, type, start, sectors) entries.
    pub(crate) fn mbr(entries: &[(u8, u8, u32, u32)]) -> [u8; 512] {
        let mut s = [0u8; 512];
        for (i, (status, kind, start, len)) in entries.iter().enumerate() {
            let e = &mut s[446 + 16 * i..446 + 16 * (i + 1)];
            e[0] = *status;
            e[4] = *kind;
            e[8..12].copy_from_slice(&start.to_le_bytes());
            e[12..16].copy_from_slice(&len.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    /// A disk image with a GPT of `parts` ((first, last) LBAs; `None` = an
    /// unused entry) in 128 entries of 128 bytes from LBA 2.
    pub(crate) fn gpt_disk(block: usize, blocks: usize, parts: &[Option<(u64, u64)>]) -> Vec<u8> {
        let mut disk = vec![0u8; block * blocks];
        let mut array = vec![0u8; 128 * 128];
        for (i, p) in parts.iter().enumerate() {
            if let Some((first, last)) = p {
                let e = &mut array[i * 128..(i + 1) * 128];
                e[..16].copy_from_slice(&[0xAF; 16]);
                e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
                e[32..40].copy_from_slice(&first.to_le_bytes());
                e[40..48].copy_from_slice(&last.to_le_bytes());
            }
        }
        let h = &mut disk[block..block + 92];
        h[..8].copy_from_slice(GPT_SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
        let crc = crc32(h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        disk[2 * block..2 * block + array.len()].copy_from_slice(&array);
        // A protective MBR, as GPT disks carry.
        disk[..512].copy_from_slice(&mbr(&[(0, 0xEE, 1, (blocks - 1) as u32)]));
        disk
    }

    fn read_from(disk: &[u8]) -> impl FnMut(u64, &mut [u8]) -> Result<(), String> + '_ {
        move |off, buf| {
            let off = usize::try_from(off).map_err(|e| e.to_string())?;
            let src = disk
                .get(off..off + buf.len())
                .ok_or_else(|| format!("read past the end at {off}"))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn mbr_entries_are_taken_in_table_order_as_redox_takes_them() {
        let s = mbr(&[
            (0x80, 0x83, 2048, 1000),
            (0x00, 0x00, 9000, 0),  // no sectors: skipped
            (0x12, 0x83, 5000, 10), // bad status: skipped
            (0x00, 0x07, 4096, 20),
        ]);
        let t = parse_mbr(&s).unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        assert_eq!(
            t.partitions,
            vec![
                Partition {
                    start: 2048,
                    blocks: 1000
                },
                Partition {
                    start: 4096,
                    blocks: 20
                }
            ]
        );
        let mut unsigned = s;
        unsigned[511] = 0;
        assert_eq!(parse_mbr(&unsigned), None);
    }

    #[test]
    fn gpt_is_read_before_the_mbr_and_numbers_used_entries_only() {
        for block in [512usize, 4096] {
            let disk = gpt_disk(block, 200, &[Some((40, 99)), None, Some((100, 149))]);
            let t = read_table(block as u32, read_from(&disk)).unwrap().unwrap();
            assert_eq!(t.kind, TableKind::Gpt, "block size {block}");
            assert_eq!(
                t.partitions,
                vec![
                    Partition {
                        start: 40,
                        blocks: 60
                    },
                    Partition {
                        start: 100,
                        blocks: 50
                    }
                ]
            );
        }
    }

    #[test]
    fn a_gpt_failing_its_checks_falls_back_to_the_mbr() {
        let block = 512;
        let mut disk = gpt_disk(block, 200, &[Some((40, 99))]);
        // Corrupt one entry byte: the array CRC no longer matches.
        disk[2 * block + 33] ^= 1;
        let t = read_table(512, read_from(&disk)).unwrap().unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        assert_eq!(
            t.partitions,
            vec![Partition {
                start: 1,
                blocks: 199
            }]
        );
        // A corrupt header too.
        let mut disk = gpt_disk(block, 200, &[Some((40, 99))]);
        disk[block + 40] ^= 1;
        assert_eq!(
            read_table(512, read_from(&disk)).unwrap().unwrap().kind,
            TableKind::Mbr
        );
    }

    #[test]
    fn no_table_for_blank_disks_and_other_block_sizes() {
        let blank = vec![0u8; 8192];
        assert_eq!(read_table(512, read_from(&blank)).unwrap(), None);
        let disk = gpt_disk(512, 200, &[Some((40, 99))]);
        assert_eq!(read_table(520, read_from(&disk)).unwrap(), None);
    }

    #[test]
    fn read_errors_are_passed_on() {
        let tiny = vec![0u8; 100];
        assert!(read_table(512, read_from(&tiny)).is_err());
    }

    #[test]
    fn hostile_headers_never_panic() {
        let block = 512;
        let base = gpt_disk(block, 64, &[Some((34, 40))]);
        // Every single-byte change of the header, re-signed so the header
        // CRC passes and the fields themselves are what is tested.
        for off in 8..92 {
            for v in [0u8, 0x7f, 0xff] {
                let mut disk = base.clone();
                disk[block + off] = v;
                disk[block + 16..block + 20].fill(0);
                let crc = crc32(&disk[block..block + 92]);
                disk[block + 16..block + 20].copy_from_slice(&crc.to_le_bytes());
                let _ = read_table(512, read_from(&disk));
            }
        }
    }
}
