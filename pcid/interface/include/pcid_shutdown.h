/*
 * pcid_shutdown.h: the wire constants of the pcid shutdown protocol,
 * version 1, for drivers written in C.
 *
 * Everything here is specified in PROTOCOL.md (installed with this header as
 * /usr/share/doc/pcid-shutdown/PROTOCOL.md);
 * the section of each group is named. A test of the Rust crate
 * (pcid_interface, tests/c_header.rs) checks every value against PROTOCOL.md
 * and against the Rust encoder, so the three cannot drift apart. The C
 * driver of the tests (tests/c_driver.c) is written with it.
 *
 * All integers on the wire are little-endian and unaligned: read and write
 * them byte by byte (pcid_get_u16 ... below), never through a cast struct.
 * The header is C99, has no dependencies beyond <stdint.h> and <string.h>,
 * and declares only macros and static inline functions.
 */
#ifndef PCID_SHUTDOWN_H
#define PCID_SHUTDOWN_H

#include <stdint.h>
#include <string.h>

/* --- §10: how a driver finds its channel ---------------------------------- */

/* Environment variable holding the channel's fd number, in decimal. */
#define PCID_CLIENT_CHANNEL_ENV "PCID_CLIENT_CHANNEL"

/* --- §2.3: frame header --------------------------------------------------- */

#define PCID_MAGIC "PCID"            /* the first 4 bytes of every frame */
#define PCID_MAGIC_LEN 4
#define PCID_WIRE_VERSION 1          /* header version, in every frame */
#define PCID_PROTOCOL_VERSION 1      /* Hello / Welcome version */
#define PCID_HEADER_LEN 16
#define PCID_MAX_FRAME_LEN 65536     /* header + payload */
#define PCID_MAX_PAYLOAD_LEN 65520   /* PCID_MAX_FRAME_LEN - PCID_HEADER_LEN */

/* Header field offsets and sizes. */
#define PCID_HDR_MAGIC 0             /* 4 bytes, "PCID" */
#define PCID_HDR_VERSION 4           /* u16 */
#define PCID_HDR_TYPE 6              /* u8, PCID_MSG_* / PCID_CTL_* */
#define PCID_HDR_FLAGS 7             /* u8, 0 in version 1 */
#define PCID_HDR_SEQ 8               /* u32 */
#define PCID_HDR_LENGTH 12           /* u32, payload length */

/* --- §2.1: primitive sizes and string limits ------------------------------ */

#define PCID_DURATION_LEN 8          /* u64 microseconds */
#define PCID_ADDRESS_LEN 5           /* u16 segment, u8 bus, u8 device, u8 function */
#define PCID_MAX_NAME_LEN 255        /* string(NAME): driver names */
#define PCID_MAX_TEXT_LEN 1024       /* string(TEXT): detail and error texts */
#define PCID_MAX_PATH_LEN 4096       /* string(PATH): filesystem paths */

/* --- §3: message types (header byte 6) ------------------------------------ */

/* Driver channel. */
#define PCID_MSG_HELLO 0x01          /* driver -> pcid */
#define PCID_MSG_WELCOME 0x02        /* pcid -> driver */
#define PCID_MSG_READY 0x03          /* driver -> pcid */
#define PCID_MSG_BEGIN 0x04          /* pcid -> driver */
#define PCID_MSG_BEGIN_ACK 0x05      /* driver -> pcid */
#define PCID_MSG_FINISH 0x06         /* pcid -> driver */
#define PCID_MSG_SHUTDOWN 0x07       /* pcid -> driver */
#define PCID_MSG_FINISH_ACK 0x08     /* driver -> pcid */
#define PCID_MSG_ERROR 0x09          /* either */

/* Participant endpoint (§14): a daemon that is not a PCI driver registers,
 * then speaks the driver channel's messages. */
#define PCID_MSG_REGISTER 0x0A       /* participant -> pcid */
#define PCID_MSG_REGISTERED 0x0B     /* pcid -> participant */

/* Control endpoint (shutdownd <-> pcid). */
#define PCID_CTL_LIST_DEVICES 0x41
#define PCID_CTL_DEVICES 0x42
#define PCID_CTL_BEGIN 0x43
#define PCID_CTL_FINISH 0x44
#define PCID_CTL_SHUTDOWN 0x45
#define PCID_CTL_BEGIN_ACK 0x46
#define PCID_CTL_FINISH_ACK 0x47
#define PCID_CTL_DEVICE_ERROR 0x48
#define PCID_CTL_ERROR 0x49
#define PCID_CTL_LIST_PARTICIPANTS 0x4A
#define PCID_CTL_PARTICIPANTS 0x4B
#define PCID_CTL_PARTICIPANT_BEGIN 0x4C
#define PCID_CTL_PARTICIPANT_FINISH 0x4D
#define PCID_CTL_PARTICIPANT_SHUTDOWN 0x4E
#define PCID_CTL_PARTICIPANT_BEGIN_ACK 0x4F
#define PCID_CTL_PARTICIPANT_FINISH_ACK 0x50
#define PCID_CTL_PARTICIPANT_ERROR 0x51

/* --- §4: fixed payload sizes on the driver channel ------------------------ */

#define PCID_BEGIN_LEN 9             /* kind, duration deadline */
#define PCID_BEGIN_ACK_LEN 8         /* duration budget */
#define PCID_FINISH_LEN 8            /* duration deadline */
#define PCID_SHUTDOWN_LEN 9          /* kind, duration deadline */
#define PCID_READY_LEN 0
#define PCID_HELLO_MIN_LEN 5         /* u16 version, support, string name */
#define PCID_FINISH_ACK_MIN_LEN 11   /* outcome, duration elapsed, string detail */
#define PCID_ERROR_MIN_LEN 2         /* string message */
#define PCID_REGISTERED_LEN 6        /* u16 version, u32 participant id */

/* §4: a Register's providers (u16 count, then a tag u8 each). */
#define PCID_MAX_PROVIDERS 256
#define PCID_PROVIDER_DEVICE 1       /* then address */
#define PCID_PROVIDER_PARTICIPANT 2  /* then string name */
#define PCID_PROVIDER_ALL_DEVICES 3  /* nothing follows */

/* --- §2.2: enumerations (one u8 each; 0 is never valid) ------------------- */

#define PCID_KIND_POWEROFF 1
#define PCID_KIND_REBOOT 2

#define PCID_SUPPORT_NONE 1
#define PCID_SUPPORT_ONE_PHASE 2
#define PCID_SUPPORT_TWO_PHASE 3

#define PCID_OUTCOME_CLEAN 1
#define PCID_OUTCOME_ABRUPT 2
#define PCID_OUTCOME_TIMED_OUT 3
#define PCID_OUTCOME_FAILED 4

#define PCID_STATE_STARTING 1
#define PCID_STATE_RUNNING 2
#define PCID_STATE_GONE 3

#define PCID_ERROR_UNKNOWN_DEVICE 1
#define PCID_ERROR_DRIVER_DIED 2
#define PCID_ERROR_PROTOCOL_VIOLATION 3
#define PCID_ERROR_NOT_SUPPORTED 4
#define PCID_ERROR_BUSY 5

#define PCID_BACKEND_SIMULATED 1
#define PCID_BACKEND_LINUX_SYSFS 2
#define PCID_BACKEND_REDOX 3

#define PCID_BAR_MEM32 1
#define PCID_BAR_MEM32_PREFETCHABLE 2
#define PCID_BAR_MEM64 3
#define PCID_BAR_MEM64_PREFETCHABLE 4
#define PCID_BAR_IO 5

/* --- little-endian access ------------------------------------------------- */

static inline uint16_t pcid_get_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}
static inline uint32_t pcid_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t pcid_get_u64(const uint8_t *p) {
    return (uint64_t)pcid_get_u32(p) | (uint64_t)pcid_get_u32(p + 4) << 32;
}
static inline void pcid_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void pcid_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void pcid_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* --- §2.3: the header, written and checked -------------------------------- */

/* A parsed header. */
struct pcid_header {
    uint8_t type;
    uint8_t flags;
    uint32_t seq;
    uint32_t length;
};

/* Results of pcid_parse_header, in the order §2.3 checks them. The first
 * three lose the stream's framing: close the connection (§8), never read or
 * skip `length` bytes. */
enum pcid_header_status {
    PCID_HEADER_OK = 0,
    PCID_HEADER_BAD_MAGIC = 1,
    PCID_HEADER_BAD_VERSION = 2,   /* send Error(seq) if possible, then close */
    PCID_HEADER_TOO_LONG = 3
};

/* Writes a 16-byte header for a payload of `length` bytes. */
static inline void pcid_put_header(uint8_t out[PCID_HEADER_LEN], uint8_t type, uint32_t seq,
                                   uint32_t length) {
    memcpy(out + PCID_HDR_MAGIC, PCID_MAGIC, PCID_MAGIC_LEN);
    pcid_put_u16(out + PCID_HDR_VERSION, PCID_WIRE_VERSION);
    out[PCID_HDR_TYPE] = type;
    out[PCID_HDR_FLAGS] = 0;
    pcid_put_u32(out + PCID_HDR_SEQ, seq);
    pcid_put_u32(out + PCID_HDR_LENGTH, length);
}

/* Checks magic, version and length (in that order) and fills `h`; the seq is
 * filled even when the version is wrong, so it can be named in the Error. */
static inline enum pcid_header_status pcid_parse_header(const uint8_t in[PCID_HEADER_LEN],
                                                        struct pcid_header *h) {
    h->type = in[PCID_HDR_TYPE];
    h->flags = in[PCID_HDR_FLAGS];
    h->seq = pcid_get_u32(in + PCID_HDR_SEQ);
    h->length = pcid_get_u32(in + PCID_HDR_LENGTH);
    if (memcmp(in + PCID_HDR_MAGIC, PCID_MAGIC, PCID_MAGIC_LEN) != 0) return PCID_HEADER_BAD_MAGIC;
    if (pcid_get_u16(in + PCID_HDR_VERSION) != PCID_WIRE_VERSION) return PCID_HEADER_BAD_VERSION;
    if (h->length > PCID_MAX_PAYLOAD_LEN) return PCID_HEADER_TOO_LONG;
    return PCID_HEADER_OK;
}

#endif /* PCID_SHUTDOWN_H */
