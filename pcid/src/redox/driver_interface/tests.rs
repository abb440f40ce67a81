//! Golden bytes (written by hand from serde's derived layout and bincode 1's
//! rules, see `codec`) and the handler against a configuration-space model.

use super::handler::{self, Capability, Function};
use super::*;
use crate::redox::config_space::model::{addr, Model};
use crate::redox::config_space::ConfigAccess;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn nvme_config() -> FunctionConfig {
    FunctionConfig {
        addr: addr(0, 0, 4, 0),
        bars: [
            PciBar::Memory64 {
                addr: 0xFEBF_0000,
                size: 0x4000,
            },
            PciBar::None,
            PciBar::None,
            PciBar::None,
            PciBar::Port(0xC040),
            PciBar::Memory32 {
                addr: 0xFEBD_1000,
                size: 0x1000,
            },
        ],
        rom: Some(PciRom {
            addr: 0xFEB8_0000,
            size: 0x40000,
            enabled: false,
        }),
        legacy_interrupt_line: Some(LegacyInterruptLine {
            irq: 11,
            phandled: None,
        }),
        full_device_id: FullDeviceId {
            vendor_id: 0x1B36,
            device_id: 0x0010,
            class: 1,
            subclass: 8,
            interface: 2,
            revision: 2,
        },
    }
}

#[test]
fn request_golden_bytes() {
    let cases: Vec<(Request, &str)> = vec![
        (Request::EnableDevice, "00 00 00 00"),
        (Request::RequestConfig, "01 00 00 00"),
        (Request::RequestFeatures, "02 00 00 00"),
        (Request::RequestVendorCapabilities, "03 00 00 00"),
        (
            Request::EnableFeature(PciFeature::MsiX),
            "04 00 00 00  01 00 00 00",
        ),
        (
            Request::FeatureInfo(PciFeature::Msi),
            "05 00 00 00  00 00 00 00",
        ),
        (
            Request::SetFeatureInfo(SetFeatureInfo::Msi(MsiSetFeatureInfo {
                multi_message_enable: Some(2),
                message_address_and_data: Some(MsiAddrAndData {
                    addr: 0xFEE0_0000,
                    data: 0x4041,
                }),
                mask_bits: None,
            })),
            // variant 6, Msi (0), Some(2), Some({addr u64, data u32}), None
            "06 00 00 00  00 00 00 00  01 02  01 00 00 e0 fe 00 00 00 00 41 40 00 00  00",
        ),
        (
            Request::SetFeatureInfo(SetFeatureInfo::Msi(MsiSetFeatureInfo {
                multi_message_enable: None,
                message_address_and_data: None,
                mask_bits: Some(0xFFFF_FFFE),
            })),
            "06 00 00 00  00 00 00 00  00  00  01 fe ff ff ff",
        ),
        (
            Request::SetFeatureInfo(SetFeatureInfo::MsiX {
                function_mask: Some(true),
            }),
            "06 00 00 00  01 00 00 00  01 01",
        ),
        (Request::ReadConfig(0x40), "07 00 00 00  40 00"),
        (
            Request::WriteConfig(0x04, 0x0000_0406),
            "08 00 00 00  04 00  06 04 00 00",
        ),
    ];
    for (request, bytes) in cases {
        assert_eq!(request.encode(), hex(bytes), "{request:?}");
        assert_eq!(Request::decode(&hex(bytes)), Ok(request));
    }
}

#[test]
fn response_golden_bytes() {
    let config = "01 00 00 00 \
        00 00  00  04  00 \
        02 00 00 00  00 00 bf fe 00 00 00 00  00 40 00 00 00 00 00 00 \
        00 00 00 00  00 00 00 00  00 00 00 00 \
        03 00 00 00  40 c0 \
        01 00 00 00  00 10 bd fe  00 10 00 00 \
        01  00 00 b8 fe  00 00 04 00  00 \
        01  0b  00 \
        36 1b  10 00  01  08  02  02";
    let cases: Vec<(Response, &str)> = vec![
        (Response::EnabledDevice, "00 00 00 00"),
        (Response::Config(nvme_config()), config),
        (
            Response::AllFeatures(vec![PciFeature::Msi, PciFeature::MsiX]),
            "02 00 00 00  02 00 00 00 00 00 00 00  00 00 00 00  01 00 00 00",
        ),
        (
            Response::VendorCapabilities(vec![vec![1, 2, 3, 4, 5], vec![]]),
            "03 00 00 00  02 00 00 00 00 00 00 00  \
             05 00 00 00 00 00 00 00  01 02 03 04 05  \
             00 00 00 00 00 00 00 00",
        ),
        (
            Response::FeatureEnabled(PciFeature::MsiX),
            "04 00 00 00  01 00 00 00",
        ),
        (
            Response::FeatureStatus(PciFeature::Msi, FeatureStatus::Disabled),
            "05 00 00 00  00 00 00 00  01 00 00 00",
        ),
        (
            Response::Error(ServerError::NonexistentFeature(PciFeature::MsiX)),
            "06 00 00 00  00 00 00 00  01 00 00 00",
        ),
        (
            Response::Error(ServerError::InvalidBitPattern),
            "06 00 00 00  01 00 00 00",
        ),
        (
            Response::FeatureInfo(
                PciFeature::Msi,
                FeatureInfo::Msi(MsiInfo {
                    log2_multiple_message_capable: 2,
                    is_64bit: true,
                    has_per_vector_masking: false,
                }),
            ),
            "07 00 00 00  00 00 00 00  00 00 00 00  02 01 00",
        ),
        (
            Response::FeatureInfo(
                PciFeature::MsiX,
                FeatureInfo::MsiX(MsixInfo {
                    table_bar: 0,
                    table_offset: 0x2000,
                    table_size: 65,
                    pba_bar: 4,
                    pba_offset: 0x3000,
                }),
            ),
            "07 00 00 00  01 00 00 00  01 00 00 00  00  00 20 00 00  41 00  04  00 30 00 00",
        ),
        (
            Response::SetFeatureInfo(PciFeature::Msi),
            "08 00 00 00  00 00 00 00",
        ),
        (
            Response::ReadConfig(0x1234_5678),
            "09 00 00 00  78 56 34 12",
        ),
        (Response::WriteConfig, "0a 00 00 00"),
    ];
    for (response, bytes) in cases {
        assert_eq!(response.encode(), hex(bytes), "{response:?}");
        assert_eq!(Response::decode(&hex(bytes)), Ok(response));
    }
}

#[test]
fn device_tree_interrupts_and_frames_encode_as_redox_does() {
    let mut config = nvme_config();
    config.legacy_interrupt_line = Some(LegacyInterruptLine {
        irq: 1,
        phandled: Some((7, [1, 2, 3], 2)),
    });
    let bytes = Response::Config(config).encode();
    // ... irq, Some, phandle, [u32; 3] without a length, usize as u64, then the ids.
    let tail = hex("01 01  01  07 00 00 00  01 00 00 00 02 00 00 00 03 00 00 00  02 00 00 00 00 00 00 00  36 1b 10 00 01 08 02 02");
    assert!(bytes.ends_with(&tail), "{bytes:02x?}");
    assert_eq!(Response::decode(&bytes), Ok(Response::Config(config)));

    let frame = Response::ReadConfig(7).frame();
    assert_eq!(
        frame,
        hex("08 00 00 00 00 00 00 00  09 00 00 00  07 00 00 00")
    );
}

#[test]
fn decoding_rejects_bad_input_with_typed_errors_and_ignores_trailing_bytes() {
    assert_eq!(
        Request::decode(&hex("01 00 00")),
        Err(DecodeError::Truncated("PcidClientRequest"))
    );
    assert!(matches!(
        Request::decode(&hex("09 00 00 00")),
        Err(DecodeError::Invalid { value: 9, .. })
    ));
    assert!(matches!(
        Request::decode(&hex("04 00 00 00 02 00 00 00")),
        Err(DecodeError::Invalid { value: 2, .. })
    ));
    // bool and Option tags other than 0/1.
    assert!(matches!(
        Request::decode(&hex("06 00 00 00 01 00 00 00 01 02")),
        Err(DecodeError::Invalid { value: 2, .. })
    ));
    assert!(matches!(
        Request::decode(&hex("06 00 00 00 01 00 00 00 05")),
        Err(DecodeError::Invalid { value: 5, .. })
    ));
    assert_eq!(
        Request::decode(&hex("07 00 00 00 40 00 ff ff")),
        Ok(Request::ReadConfig(0x40))
    );
    // A sequence length larger than the bytes that follow is not trusted.
    assert!(matches!(
        Response::decode(&hex("02 00 00 00 ff ff ff ff ff ff ff ff")),
        Err(DecodeError::Truncated(_))
    ));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed = 0x2545_F491_u32;
    for len in 0..400usize {
        let mut bytes: Vec<u8> = (0..len % 80)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        if let Some(b) = bytes.first_mut() {
            *b %= 12;
        }
        for b in bytes.iter_mut().skip(1).take(3) {
            *b = 0;
        }
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
    }
}

// ---- handler ----

const MSI: u16 = 0x40;
const MSIX: u16 = 0x60;
const VENDOR: u16 = 0x70;

/// An NVMe-like function: 64-bit BAR0, MSI (64-bit, per-vector masking,
/// 4 vectors capable) enabled by a previous driver, MSI-X (65 entries)
/// enabled too, a vendor capability of 8 bytes, pin INTA, line 0xFF.
fn world() -> (Model, Function) {
    let a = addr(0, 0, 4, 0);
    let mut m = Model::default();
    m.function(a, 0x1B36, 0x0010, 0x0108_0202, 0);
    m.bar_mem64(a, 0, 0xFEBF_0000, 0x4000, false);
    // Status: a detected parity error (RW1C) left by firmware.
    m.set(a, 0x04, 0x8000_0000);
    m.capabilities(
        a,
        &[
            (MSI, 0x05 | (1 << 16 | 1 << 23 | 1 << 24 | 2 << 17)),
            (MSIX, 0x11 | (64 << 16) | (1 << 31)),
            (VENDOR, 0x09 | (8 << 16)),
        ],
    );
    m.set(a, MSIX + 4, 0x2000);
    m.set(a, MSIX + 8, 0x3004);
    m.set(a, VENDOR + 4, 0xDDCC_BBAA);
    m.set(a, 0x3C, 0x0000_01FF);
    let capabilities = handler::read_capabilities(&m, a);
    let f = Function {
        config: FunctionConfig {
            legacy_interrupt_line: None,
            ..nvme_config()
        },
        capabilities,
    };
    (m, f)
}

#[test]
fn capabilities_are_read_from_the_list() {
    let (_, f) = world();
    assert_eq!(
        f.capabilities,
        [
            Capability::Msi(handler::MsiCapability {
                offset: MSI,
                per_vector_masking: true,
                is_64bit: true,
                multiple_message_capable: 2,
            }),
            Capability::MsiX(handler::MsixCapability {
                offset: MSIX,
                table_size: 65,
                table: 0x2000,
                pba: 0x3004,
            }),
            Capability::Vendor { offset: VENDOR },
        ]
    );
}

#[test]
fn a_looping_capability_list_is_cut_off() {
    let a = addr(0, 0, 4, 0);
    let mut m = Model::default();
    m.function(a, 0x1B36, 0x0010, 0, 0);
    m.capabilities(a, &[(0x40, 0x01)]);
    m.set(a, 0x40, 0x4001); // points at itself
    assert_eq!(
        handler::read_capabilities(&m, a).len(),
        handler::MAX_CAPABILITIES
    );
}

#[test]
fn enable_turns_on_decoding_and_mastering_turns_off_msi_and_defaults_the_line() {
    let (m, mut f) = world();
    let a = f.config.addr;
    let line = handler::enable(&m, &mut f);
    assert_eq!(
        line,
        Some(LegacyInterruptLine {
            irq: handler::DEFAULT_IRQ,
            phandled: None
        })
    );
    assert_eq!(f.config.legacy_interrupt_line, line);
    assert_eq!(m.get(a, 0x04), 0x8010_0007, "status error bit not cleared");
    assert_eq!(m.get(a, MSI) & (1 << 16), 0, "MSI off");
    assert_eq!(m.get(a, MSIX) & (1 << 31), 0, "MSI-X off");
    assert_eq!(m.get(a, 0x3C), 0x0000_0109);

    // Pin 0: no legacy interrupt; an invalid pin neither.
    m.set(a, 0x3C, 0x0000_000B);
    assert_eq!(handler::enable(&m, &mut f), None);
    m.set(a, 0x3C, 0x0000_070B);
    assert_eq!(handler::enable(&m, &mut f), None);
    m.set(a, 0x3C, 0x0000_040B);
    assert_eq!(handler::enable(&m, &mut f).map(|l| l.irq), Some(11));
}

#[test]
fn config_features_and_vendor_capabilities() {
    let (m, mut f) = world();
    assert_eq!(
        handler::respond(&m, &mut f, Request::RequestConfig),
        Response::Config(f.config)
    );
    assert_eq!(
        handler::respond(&m, &mut f, Request::RequestFeatures),
        Response::AllFeatures(vec![PciFeature::Msi, PciFeature::MsiX])
    );
    assert_eq!(
        handler::respond(&m, &mut f, Request::RequestVendorCapabilities),
        Response::VendorCapabilities(vec![vec![0x00, 0xAA, 0xBB, 0xCC, 0xDD]])
    );
    assert_eq!(
        handler::respond(&m, &mut f, Request::FeatureInfo(PciFeature::MsiX)),
        Response::FeatureInfo(
            PciFeature::MsiX,
            FeatureInfo::MsiX(MsixInfo {
                table_bar: 0,
                table_offset: 0x2000,
                table_size: 65,
                pba_bar: 4,
                pba_offset: 0x3000,
            })
        )
    );
    assert_eq!(
        handler::respond(&m, &mut f, Request::FeatureInfo(PciFeature::Msi)),
        Response::FeatureInfo(
            PciFeature::Msi,
            FeatureInfo::Msi(MsiInfo {
                log2_multiple_message_capable: 2,
                is_64bit: true,
                has_per_vector_masking: true,
            })
        )
    );
    // A vendor capability with an invalid length has no data.
    m.set(f.config.addr, VENDOR, 0x09 | (6 << 16));
    assert_eq!(
        handler::respond(&m, &mut f, Request::RequestVendorCapabilities),
        Response::VendorCapabilities(vec![vec![]])
    );
}

#[test]
fn enabling_one_interrupt_mechanism_turns_the_other_off() {
    let (m, mut f) = world();
    let a = f.config.addr;
    assert_eq!(
        handler::respond(&m, &mut f, Request::EnableFeature(PciFeature::Msi)),
        Response::FeatureEnabled(PciFeature::Msi)
    );
    assert_eq!((m.get(a, MSI) >> 16) & 1, 1);
    assert_eq!(m.get(a, MSIX) >> 31, 0);
    assert_eq!(
        handler::respond(&m, &mut f, Request::EnableFeature(PciFeature::MsiX)),
        Response::FeatureEnabled(PciFeature::MsiX)
    );
    assert_eq!((m.get(a, MSI) >> 16) & 1, 0);
    assert_eq!(m.get(a, MSIX) >> 31, 1);

    // A function without MSI: the request fails, MSI-X is still turned off.
    f.capabilities.retain(|c| !matches!(c, Capability::Msi(_)));
    assert_eq!(
        handler::respond(&m, &mut f, Request::EnableFeature(PciFeature::Msi)),
        Response::Error(ServerError::NonexistentFeature(PciFeature::Msi))
    );
    assert_eq!(m.get(a, MSIX) >> 31, 0);
    assert_eq!(
        handler::respond(&m, &mut f, Request::FeatureInfo(PciFeature::Msi)),
        Response::Error(ServerError::NonexistentFeature(PciFeature::Msi))
    );
}

fn set_msi(m: &Model, f: &mut Function, info: MsiSetFeatureInfo) -> Response {
    handler::respond(m, f, Request::SetFeatureInfo(SetFeatureInfo::Msi(info)))
}

#[test]
fn msi_settings_are_checked_then_written() {
    let (m, mut f) = world();
    let a = f.config.addr;
    let bad = Response::Error(ServerError::InvalidBitPattern);
    // More vectors than the function can send.
    let too_many = MsiSetFeatureInfo {
        multi_message_enable: Some(3),
        ..Default::default()
    };
    assert_eq!(set_msi(&m, &mut f, too_many), bad);
    // Two vectors: the data's lowest bit belongs to the function.
    let two = MsiSetFeatureInfo {
        multi_message_enable: Some(1),
        ..Default::default()
    };
    assert_eq!(
        set_msi(&m, &mut f, two),
        Response::SetFeatureInfo(PciFeature::Msi)
    );
    assert_eq!((m.get(a, MSI) >> 20) & 0x7, 1);
    let odd_data = MsiSetFeatureInfo {
        message_address_and_data: Some(MsiAddrAndData {
            addr: 0xFEE0_0000,
            data: 0x41,
        }),
        ..Default::default()
    };
    assert_eq!(set_msi(&m, &mut f, odd_data), bad);
    let misaligned = MsiSetFeatureInfo {
        message_address_and_data: Some(MsiAddrAndData {
            addr: 0xFEE0_0002,
            data: 0x40,
        }),
        ..Default::default()
    };
    assert_eq!(set_msi(&m, &mut f, misaligned), bad);
    m.clear_writes();
    let good = MsiSetFeatureInfo {
        message_address_and_data: Some(MsiAddrAndData {
            addr: 0x1_FEE0_1000,
            data: 0x4040,
        }),
        mask_bits: Some(0b10),
        ..Default::default()
    };
    assert_eq!(
        set_msi(&m, &mut f, good),
        Response::SetFeatureInfo(PciFeature::Msi)
    );
    // 64-bit layout: address low, address high, data, mask.
    let written: Vec<(u16, u32)> = m.writes().iter().map(|w| (w.offset, w.value)).collect();
    assert_eq!(
        written,
        [
            (MSI + 4, 0xFEE0_1000),
            (MSI + 8, 1),
            (MSI + 0x0C, 0x4040),
            (MSI + 0x10, 0b10)
        ]
    );

    // A 32-bit function with per-vector masking: data at 0x08, mask at 0x0C.
    let Capability::Msi(msi) = &mut f.capabilities[0] else {
        unreachable!()
    };
    msi.is_64bit = false;
    m.clear_writes();
    assert_eq!(
        set_msi(&m, &mut f, good),
        Response::SetFeatureInfo(PciFeature::Msi)
    );
    let written: Vec<u16> = m.writes().iter().map(|w| w.offset).collect();
    assert_eq!(written, [MSI + 4, MSI + 8, MSI + 0x0C]);
}

#[test]
fn msix_function_mask() {
    let (m, mut f) = world();
    let a = f.config.addr;
    let mask = |on| {
        Request::SetFeatureInfo(SetFeatureInfo::MsiX {
            function_mask: Some(on),
        })
    };
    assert_eq!(
        handler::respond(&m, &mut f, mask(true)),
        Response::SetFeatureInfo(PciFeature::MsiX)
    );
    assert_eq!((m.get(a, MSIX) >> 30) & 1, 1);
    handler::respond(&m, &mut f, mask(false));
    assert_eq!((m.get(a, MSIX) >> 30) & 1, 0);
    f.capabilities.clear();
    assert_eq!(
        handler::respond(&m, &mut f, mask(true)),
        Response::Error(ServerError::NonexistentFeature(PciFeature::MsiX))
    );
}

#[test]
fn config_dwords_are_read_and_written_and_bad_offsets_refused() {
    let (m, mut f) = world();
    let a = f.config.addr;
    assert_eq!(
        handler::respond(&m, &mut f, Request::ReadConfig(0)),
        Response::ReadConfig(0x0010_1B36)
    );
    assert_eq!(
        handler::respond(&m, &mut f, Request::WriteConfig(0xA0, 0xCAFE)),
        Response::WriteConfig
    );
    assert_eq!(m.get(a, 0xA0), 0xCAFE);
    m.clear_writes();
    for off in [0x1000, 0xFFFF, 0x42] {
        let bad = Response::Error(ServerError::InvalidBitPattern);
        assert_eq!(handler::respond(&m, &mut f, Request::ReadConfig(off)), bad);
        assert_eq!(
            handler::respond(&m, &mut f, Request::WriteConfig(off, 1)),
            bad
        );
    }
    assert!(m.writes().is_empty());
    assert_eq!(m.read32(a, 0xFFC), 0);
}
