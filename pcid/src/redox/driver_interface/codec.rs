//! The bytes of Redox's driver interface: serde's derived layout through
//! bincode 1's default configuration (what `bincode::serialize` and
//! `bincode::deserialize_from` use), written out by hand.
//!
//! The rules this module follows, all little-endian and unaligned:
//!
//! | Rust/serde shape | bytes |
//! |---|---|
//! | `u8`, `u16`, `u32`, `u64` | 1, 2, 4, 8 bytes |
//! | `usize` | as `u64` |
//! | `bool` | one byte, 0 or 1 (anything else is an error) |
//! | `Option<T>` | one byte 0 (none) or 1 followed by `T` (anything else is an error) |
//! | enum variant | `u32` variant index (declaration order), then the variant's fields |
//! | struct, tuple, struct/tuple variant fields | each field in declaration order, no names, no count |
//! | `[T; N]` | `N` × `T`, no length |
//! | `Vec<T>` | `u64` element count, then the elements |
//!
//! A response travels as `u64` length + body ([`Response::frame`]).
//! Decoding reads one value from the start of the bytes and ignores anything
//! after it, as `bincode::deserialize_from` does; it never panics and never
//! allocates more than the input could hold.

use pcid_interface::function::PciAddress;

use super::{
    FeatureInfo, FeatureStatus, FullDeviceId, FunctionConfig, LegacyInterruptLine, MsiAddrAndData,
    MsiInfo, MsiSetFeatureInfo, MsixInfo, PciBar, PciFeature, PciRom, Request, Response,
    ServerError, SetFeatureInfo,
};

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside a value.
    #[error("truncated: {0} needs more bytes")]
    Truncated(&'static str),
    /// A value is not one the type allows.
    #[error("{what}: invalid value {value}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// What was read.
        value: u64,
    },
}

/// Appends encoded values.
#[derive(Debug, Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    fn variant(&mut self, index: u32) {
        self.u32(index);
    }
    fn option<T>(&mut self, v: &Option<T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                f(self, x);
            }
        }
    }
    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
}

/// Reads encoded values from the front of a byte slice.
#[derive(Debug)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::Invalid {
                what,
                value: u64::from(v),
            }),
        }
    }
    fn variant(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.u32(what)
    }
    fn option<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => f(self).map(Some),
            v => Err(DecodeError::Invalid {
                what,
                value: u64::from(v),
            }),
        }
    }
    /// A sequence length, checked against the bytes left (`min_size` bytes per element).
    fn len(&mut self, what: &'static str, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.u64(what)?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_size) <= self.0.len() => Ok(n),
            _ => Err(DecodeError::Truncated(what)),
        }
    }
}

fn invalid(what: &'static str, value: u32) -> DecodeError {
    DecodeError::Invalid {
        what,
        value: u64::from(value),
    }
}

fn put_feature(w: &mut Writer, f: PciFeature) {
    w.variant(match f {
        PciFeature::Msi => 0,
        PciFeature::MsiX => 1,
    });
}

fn get_feature(r: &mut Reader<'_>) -> Result<PciFeature, DecodeError> {
    match r.variant("PciFeature")? {
        0 => Ok(PciFeature::Msi),
        1 => Ok(PciFeature::MsiX),
        v => Err(invalid("PciFeature", v)),
    }
}

impl Request {
    /// Encodes the request as a driver sends it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match *self {
            Request::EnableDevice => w.variant(0),
            Request::RequestConfig => w.variant(1),
            Request::RequestFeatures => w.variant(2),
            Request::RequestVendorCapabilities => w.variant(3),
            Request::EnableFeature(f) => {
                w.variant(4);
                put_feature(&mut w, f);
            }
            Request::FeatureInfo(f) => {
                w.variant(5);
                put_feature(&mut w, f);
            }
            Request::SetFeatureInfo(info) => {
                w.variant(6);
                match info {
                    SetFeatureInfo::Msi(m) => {
                        w.variant(0);
                        w.option(&m.multi_message_enable, |w, v| w.u8(*v));
                        w.option(&m.message_address_and_data, |w, v| {
                            w.u64(v.addr);
                            w.u32(v.data);
                        });
                        w.option(&m.mask_bits, |w, v| w.u32(*v));
                    }
                    SetFeatureInfo::MsiX { function_mask } => {
                        w.variant(1);
                        w.option(&function_mask, |w, v| w.bool(*v));
                    }
                }
            }
            Request::ReadConfig(offset) => {
                w.variant(7);
                w.u16(offset);
            }
            Request::WriteConfig(offset, value) => {
                w.variant(8);
                w.u16(offset);
                w.u32(value);
            }
        }
        w.0
    }

    /// Decodes one request from the start of `bytes` (trailing bytes are
    /// ignored, as Redox's pcid ignores them).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        Ok(match r.variant("PcidClientRequest")? {
            0 => Request::EnableDevice,
            1 => Request::RequestConfig,
            2 => Request::RequestFeatures,
            3 => Request::RequestVendorCapabilities,
            4 => Request::EnableFeature(get_feature(&mut r)?),
            5 => Request::FeatureInfo(get_feature(&mut r)?),
            6 => Request::SetFeatureInfo(match r.variant("SetFeatureInfo")? {
                0 => SetFeatureInfo::Msi(MsiSetFeatureInfo {
                    multi_message_enable: r
                        .option("multi_message_enable", |r| r.u8("multi_message_enable"))?,
                    message_address_and_data: r.option("message_address_and_data", |r| {
                        Ok(MsiAddrAndData {
                            addr: r.u64("MsiAddrAndData.addr")?,
                            data: r.u32("MsiAddrAndData.data")?,
                        })
                    })?,
                    mask_bits: r.option("mask_bits", |r| r.u32("mask_bits"))?,
                }),
                1 => SetFeatureInfo::MsiX {
                    function_mask: r.option("function_mask", |r| r.bool("function_mask"))?,
                },
                v => return Err(invalid("SetFeatureInfo", v)),
            }),
            7 => Request::ReadConfig(r.u16("ReadConfig offset")?),
            8 => Request::WriteConfig(r.u16("WriteConfig offset")?, r.u32("WriteConfig value")?),
            v => return Err(invalid("PcidClientRequest", v)),
        })
    }
}

fn put_bar(w: &mut Writer, bar: &PciBar) {
    match *bar {
        PciBar::None => w.variant(0),
        PciBar::Memory32 { addr, size } => {
            w.variant(1);
            w.u32(addr);
            w.u32(size);
        }
        PciBar::Memory64 { addr, size } => {
            w.variant(2);
            w.u64(addr);
            w.u64(size);
        }
        PciBar::Port(port) => {
            w.variant(3);
            w.u16(port);
        }
    }
}

fn get_bar(r: &mut Reader<'_>) -> Result<PciBar, DecodeError> {
    Ok(match r.variant("PciBar")? {
        0 => PciBar::None,
        1 => PciBar::Memory32 {
            addr: r.u32("PciBar addr")?,
            size: r.u32("PciBar size")?,
        },
        2 => PciBar::Memory64 {
            addr: r.u64("PciBar addr")?,
            size: r.u64("PciBar size")?,
        },
        3 => PciBar::Port(r.u16("PciBar port")?),
        v => return Err(invalid("PciBar", v)),
    })
}

fn put_config(w: &mut Writer, f: &FunctionConfig) {
    // `PciAddress` goes through Redox's `PciAddressDef`: segment, bus, device, function.
    w.u16(f.addr.segment);
    w.u8(f.addr.bus);
    w.u8(f.addr.device);
    w.u8(f.addr.function);
    for bar in &f.bars {
        put_bar(w, bar);
    }
    w.option(&f.rom, |w, rom| {
        w.u32(rom.addr);
        w.u32(rom.size);
        w.bool(rom.enabled);
    });
    w.option(&f.legacy_interrupt_line, |w, line| {
        w.u8(line.irq);
        w.option(&line.phandled, |w, (phandle, cells, count)| {
            w.u32(*phandle);
            for c in cells {
                w.u32(*c);
            }
            w.u64(*count);
        });
    });
    let id = &f.full_device_id;
    w.u16(id.vendor_id);
    w.u16(id.device_id);
    w.u8(id.class);
    w.u8(id.subclass);
    w.u8(id.interface);
    w.u8(id.revision);
}

fn get_config(r: &mut Reader<'_>) -> Result<FunctionConfig, DecodeError> {
    let addr = PciAddress {
        segment: r.u16("PciAddress segment")?,
        bus: r.u8("PciAddress bus")?,
        device: r.u8("PciAddress device")?,
        function: r.u8("PciAddress function")?,
    };
    let mut bars = [PciBar::None; 6];
    for bar in &mut bars {
        *bar = get_bar(r)?;
    }
    let rom = r.option("rom", |r| {
        Ok(PciRom {
            addr: r.u32("PciRom addr")?,
            size: r.u32("PciRom size")?,
            enabled: r.bool("PciRom enabled")?,
        })
    })?;
    let legacy_interrupt_line = r.option("legacy_interrupt_line", |r| {
        Ok(LegacyInterruptLine {
            irq: r.u8("irq")?,
            phandled: r.option("phandled", |r| {
                Ok((
                    r.u32("phandle")?,
                    [r.u32("cell")?, r.u32("cell")?, r.u32("cell")?],
                    r.u64("cell count")?,
                ))
            })?,
        })
    })?;
    let full_device_id = FullDeviceId {
        vendor_id: r.u16("vendor_id")?,
        device_id: r.u16("device_id")?,
        class: r.u8("class")?,
        subclass: r.u8("subclass")?,
        interface: r.u8("interface")?,
        revision: r.u8("revision")?,
    };
    Ok(FunctionConfig {
        addr,
        bars,
        rom,
        legacy_interrupt_line,
        full_device_id,
    })
}

impl Response {
    /// Encodes the response body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Response::EnabledDevice => w.variant(0),
            Response::Config(config) => {
                w.variant(1);
                put_config(&mut w, config);
            }
            Response::AllFeatures(features) => {
                w.variant(2);
                w.len(features.len());
                for f in features {
                    put_feature(&mut w, *f);
                }
            }
            Response::VendorCapabilities(caps) => {
                w.variant(3);
                w.len(caps.len());
                for data in caps {
                    w.len(data.len());
                    w.0.extend_from_slice(data);
                }
            }
            Response::FeatureEnabled(f) => {
                w.variant(4);
                put_feature(&mut w, *f);
            }
            Response::FeatureStatus(f, status) => {
                w.variant(5);
                put_feature(&mut w, *f);
                w.variant(match status {
                    FeatureStatus::Enabled => 0,
                    FeatureStatus::Disabled => 1,
                });
            }
            Response::Error(e) => {
                w.variant(6);
                match e {
                    ServerError::NonexistentFeature(f) => {
                        w.variant(0);
                        put_feature(&mut w, *f);
                    }
                    ServerError::InvalidBitPattern => w.variant(1),
                }
            }
            Response::FeatureInfo(f, info) => {
                w.variant(7);
                put_feature(&mut w, *f);
                match info {
                    FeatureInfo::Msi(m) => {
                        w.variant(0);
                        w.u8(m.log2_multiple_message_capable);
                        w.bool(m.is_64bit);
                        w.bool(m.has_per_vector_masking);
                    }
                    FeatureInfo::MsiX(m) => {
                        w.variant(1);
                        w.u8(m.table_bar);
                        w.u32(m.table_offset);
                        w.u16(m.table_size);
                        w.u8(m.pba_bar);
                        w.u32(m.pba_offset);
                    }
                }
            }
            Response::SetFeatureInfo(f) => {
                w.variant(8);
                put_feature(&mut w, *f);
            }
            Response::ReadConfig(v) => {
                w.variant(9);
                w.u32(*v);
            }
            Response::WriteConfig => w.variant(10),
        }
        w.0
    }

    /// The response as pcid queues it: `u64` LE body length, then the body.
    pub fn frame(&self) -> Vec<u8> {
        let body = self.encode();
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes one response body from the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        Ok(match r.variant("PcidClientResponse")? {
            0 => Response::EnabledDevice,
            1 => Response::Config(get_config(&mut r)?),
            2 => {
                let n = r.len("AllFeatures", 4)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(get_feature(&mut r)?);
                }
                Response::AllFeatures(v)
            }
            3 => {
                let n = r.len("VendorCapabilities", 8)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.len("VendorSpecificCapability data", 1)?;
                    v.push(r.take(len, "VendorSpecificCapability data")?.to_vec());
                }
                Response::VendorCapabilities(v)
            }
            4 => Response::FeatureEnabled(get_feature(&mut r)?),
            5 => Response::FeatureStatus(
                get_feature(&mut r)?,
                match r.variant("FeatureStatus")? {
                    0 => FeatureStatus::Enabled,
                    1 => FeatureStatus::Disabled,
                    v => return Err(invalid("FeatureStatus", v)),
                },
            ),
            6 => Response::Error(match r.variant("PcidServerResponseError")? {
                0 => ServerError::NonexistentFeature(get_feature(&mut r)?),
                1 => ServerError::InvalidBitPattern,
                v => return Err(invalid("PcidServerResponseError", v)),
            }),
            7 => {
                let f = get_feature(&mut r)?;
                let info = match r.variant("PciFeatureInfo")? {
                    0 => FeatureInfo::Msi(MsiInfo {
                        log2_multiple_message_capable: r.u8("log2_multiple_message_capable")?,
                        is_64bit: r.bool("is_64bit")?,
                        has_per_vector_masking: r.bool("has_per_vector_masking")?,
                    }),
                    1 => FeatureInfo::MsiX(MsixInfo {
                        table_bar: r.u8("table_bar")?,
                        table_offset: r.u32("table_offset")?,
                        table_size: r.u16("table_size")?,
                        pba_bar: r.u8("pba_bar")?,
                        pba_offset: r.u32("pba_offset")?,
                    }),
                    v => return Err(invalid("PciFeatureInfo", v)),
                };
                Response::FeatureInfo(f, info)
            }
            8 => Response::SetFeatureInfo(get_feature(&mut r)?),
            9 => Response::ReadConfig(r.u32("ReadConfig value")?),
            10 => Response::WriteConfig,
            v => return Err(invalid("PcidClientResponse", v)),
        })
    }
}
