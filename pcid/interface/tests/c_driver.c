/*
 * A two-phase driver written in C from PROTOCOL.md alone (no Rust headers):
 * Hello -> Welcome -> Ready -> Begin/BeginAck -> Finish/FinishAck.
 * - After Ready it sends an unsolicited Error(0, "c driver note: ready")
 *   (allowed by PROTOCOL.md 6.1).
 * - Unknown or out-of-phase frames are answered with Error(seq) (§8).
 * - It relies on per-channel sequence numbers (§6.1): a Finish whose seq is
 *   not its Begin's + 1 is answered with Error(seq) and not acted on.
 * - After FinishAck it is Done: it keeps reading and answers every request
 *   with Error(seq, "shutdown already finished") (§6.1) until pcid closes
 *   the channel, then exits 0.
 * - A frame of another header version gets Error(seq, "unsupported version"),
 *   then the driver exits 9 (§6.1, §8).
 * Prints the function address it was given on stdout, and every Error pcid
 * sends it as "pcid error <seq>: <text>".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HDR 16
#define MAX_PAYLOAD 65520u

static int fd = -1;

static void put16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }
static uint16_t le16(const uint8_t *p) { return p[0] | (uint16_t)p[1] << 8; }
static uint32_t le32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static int write_all(const uint8_t *b, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        b += w; n -= (size_t)w;
    }
    return 0;
}

static int read_exact(uint8_t *b, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        b += r; n -= (size_t)r;
    }
    return 0;
}

static int send_frame(uint8_t type, uint32_t seq, const uint8_t *payload, uint32_t len) {
    uint8_t f[HDR + 2048];
    if (len > sizeof f - HDR) return -1;
    memcpy(f, "PCID", 4);
    put16(f + 4, 1);
    f[6] = type;
    f[7] = 0;
    put32(f + 8, seq);
    put32(f + 12, len);
    memcpy(f + HDR, payload, len);
    return write_all(f, HDR + len);
}

static int send_error(uint32_t seq, const char *msg) {
    uint8_t p[2 + 256];
    size_t n = strlen(msg);
    if (n > 256) n = 256;
    put16(p, (uint16_t)n);
    memcpy(p + 2, msg, n);
    return send_frame(0x09, seq, p, (uint32_t)(2 + n));
}

enum { OK, CLOSED, FATAL };

static int recv_frame(uint8_t *type, uint8_t *flags, uint32_t *seq, uint8_t *payload, uint32_t *len) {
    uint8_t h[HDR];
    if (read_exact(h, HDR) != 0) return CLOSED;
    if (memcmp(h, "PCID", 4) != 0) return FATAL;
    if (le16(h + 4) != 1) { send_error(le32(h + 8), "unsupported version"); return FATAL; }
    *type = h[6];
    *flags = h[7];
    *seq = le32(h + 8);
    *len = le32(h + 12);
    if (*len > MAX_PAYLOAD) return FATAL;
    if (read_exact(payload, *len) != 0) return CLOSED;
    return OK;
}

int main(void) {
    const char *v = getenv("PCID_CLIENT_CHANNEL");
    if (!v) { fprintf(stderr, "PCID_CLIENT_CHANNEL not set\n"); return 2; }
    fd = atoi(v);
    if (fd <= 2) { fprintf(stderr, "bad channel fd %s\n", v); return 2; }
    unsetenv("PCID_CLIENT_CHANNEL");

    /* Hello: u16 version, u8 support (3 = two-phase), string name */
    static const char name[] = "cdriver";
    uint8_t hello[5 + sizeof name];
    put16(hello, 1);
    hello[2] = 3;
    put16(hello + 3, (uint16_t)(sizeof name - 1));
    memcpy(hello + 5, name, sizeof name - 1);
    if (send_frame(0x01, 0, hello, (uint32_t)(5 + sizeof name - 1)) != 0) return 3;

    static uint8_t payload[MAX_PAYLOAD];
    uint8_t type, flags;
    uint32_t seq, len;
    if (recv_frame(&type, &flags, &seq, payload, &len) != OK) return 4;
    /* Welcome: u16 version, then function: address (u16 seg, u8 bus, u8 dev, u8 fn) ... */
    if (type != 0x02 || flags != 0 || len < 7) { send_error(seq, "expected Welcome"); return 5; }
    if (le16(payload) != 1) { send_error(0, "unsupported protocol version"); return 6; }
    printf("%04x:%02x:%02x.%x\n", le16(payload + 2), payload[4], payload[5], payload[6]);
    fflush(stdout);

    if (send_frame(0x03, 0, NULL, 0) != 0) return 7; /* Ready */
    if (send_error(0, "c driver note: ready") != 0) return 7; /* unsolicited */

    int begun = 0, done = 0;
    uint32_t begin_seq = 0;
    for (;;) {
        int r = recv_frame(&type, &flags, &seq, payload, &len);
        if (r == CLOSED) return done ? 0 : 8;
        if (r == FATAL) return 9;
        if (flags != 0) { send_error(seq, "unsupported flags"); continue; }
        if (type == 0x09) { /* Error from pcid: string message */
            uint16_t n = len >= 2 ? le16(payload) : 0;
            if (n > len - 2) n = 0;
            printf("pcid error %u: %.*s\n", (unsigned)seq, (int)n, (const char *)payload + 2);
            fflush(stdout);
            continue;
        }
        if (done && (type == 0x04 || type == 0x06 || type == 0x07)) {
            send_error(seq, "shutdown already finished");
            continue;
        }
        if (type == 0x04) { /* Begin: u8 kind, u64 deadline_us */
            if (len != 9 || payload[0] < 1 || payload[0] > 2) { send_error(seq, "malformed Begin"); continue; }
            if (begun) { send_error(seq, "duplicate Begin"); continue; }
            begun = 1;
            begin_seq = seq;
            uint8_t ack[8];
            put64(ack, le64(payload + 1) / 2); /* budget: half the deadline */
            if (send_frame(0x05, seq, ack, 8) != 0) return 10;
        } else if (type == 0x06) { /* Finish: u64 deadline_us */
            if (len != 8) { send_error(seq, "malformed Finish"); continue; }
            if (!begun) { send_error(seq, "Finish before Begin"); continue; }
            uint32_t want = begin_seq == 0xffffffffu ? 1 : begin_seq + 1;
            if (seq != want) { send_error(seq, "Finish seq is not Begin seq + 1"); continue; }
            static const char detail[] = "c ok";
            uint8_t ack[1 + 8 + 2 + sizeof detail];
            ack[0] = 1; /* clean */
            put64(ack + 1, 777);
            put16(ack + 9, (uint16_t)(sizeof detail - 1));
            memcpy(ack + 11, detail, sizeof detail - 1);
            if (send_frame(0x08, seq, ack, (uint32_t)(11 + sizeof detail - 1)) != 0) return 11;
            done = 1;
        } else {
            send_error(seq, "unexpected message type");
        }
    }
}
