/*
 * A two-phase driver written in C from PROTOCOL.md and its C header
 * (include/pcid_shutdown.h: wire constants and the header layout), with no
 * Rust code:
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
 * Prints the function address it was given on stderr, and every Error pcid
 * sends it as "pcid error <seq>: <text>"; standard output stays quiet.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pcid_shutdown.h"

static int fd = -1;

static int write_all(const uint8_t *b, size_t n) {
    while (n > 0) {
        /* MSG_NOSIGNAL: a closed channel is EPIPE, not SIGPIPE (§10). */
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
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
    uint8_t f[PCID_HEADER_LEN + 2048];
    if (len > sizeof f - PCID_HEADER_LEN) return -1;
    pcid_put_header(f, type, seq, len);
    if (len > 0) memcpy(f + PCID_HEADER_LEN, payload, len);
    return write_all(f, PCID_HEADER_LEN + len);
}

static int send_error(uint32_t seq, const char *msg) {
    uint8_t p[2 + 256];
    size_t n = strlen(msg);
    if (n > 256) n = 256;
    pcid_put_u16(p, (uint16_t)n);
    memcpy(p + 2, msg, n);
    return send_frame(PCID_MSG_ERROR, seq, p, (uint32_t)(2 + n));
}

enum { OK, CLOSED, FATAL };

static int recv_frame(uint8_t *type, uint8_t *flags, uint32_t *seq, uint8_t *payload, uint32_t *len) {
    uint8_t b[PCID_HEADER_LEN];
    struct pcid_header h;
    if (read_exact(b, PCID_HEADER_LEN) != 0) return CLOSED;
    switch (pcid_parse_header(b, &h)) {
    case PCID_HEADER_OK: break;
    case PCID_HEADER_BAD_VERSION: send_error(h.seq, "unsupported version"); return FATAL;
    default: return FATAL; /* bad magic, oversize length: framing lost */
    }
    *type = h.type;
    *flags = h.flags;
    *seq = h.seq;
    *len = h.length;
    if (read_exact(payload, *len) != 0) return CLOSED;
    return OK;
}

int main(void) {
    const char *v = getenv(PCID_CLIENT_CHANNEL_ENV);
    if (!v) { fprintf(stderr, PCID_CLIENT_CHANNEL_ENV " not set\n"); return 2; }
    fd = atoi(v);
    if (fd <= 2) { fprintf(stderr, "bad channel fd %s\n", v); return 2; }
    unsetenv(PCID_CLIENT_CHANNEL_ENV);

    /* Hello: u16 version, u8 support, string name */
    static const char name[] = "cdriver";
    uint8_t hello[PCID_HELLO_MIN_LEN + sizeof name];
    pcid_put_u16(hello, PCID_PROTOCOL_VERSION);
    hello[2] = PCID_SUPPORT_TWO_PHASE;
    pcid_put_u16(hello + 3, (uint16_t)(sizeof name - 1));
    memcpy(hello + 5, name, sizeof name - 1);
    if (send_frame(PCID_MSG_HELLO, 0, hello, (uint32_t)(PCID_HELLO_MIN_LEN + sizeof name - 1)) != 0)
        return 3;

    static uint8_t payload[PCID_MAX_PAYLOAD_LEN];
    uint8_t type, flags;
    uint32_t seq, len;
    if (recv_frame(&type, &flags, &seq, payload, &len) != OK) return 4;
    /* Welcome: u16 version, then function: address (u16 seg, u8 bus, u8 dev, u8 fn) ... */
    if (type != PCID_MSG_WELCOME || flags != 0 || len < 2 + PCID_ADDRESS_LEN) {
        send_error(seq, "expected Welcome");
        return 5;
    }
    if (pcid_get_u16(payload) != PCID_PROTOCOL_VERSION) {
        send_error(0, "unsupported protocol version");
        return 6;
    }
    fprintf(stderr, "%04x:%02x:%02x.%x\n", pcid_get_u16(payload + 2), payload[4], payload[5],
            payload[6]);

    if (send_frame(PCID_MSG_READY, 0, NULL, PCID_READY_LEN) != 0) return 7;
    if (send_error(0, "c driver note: ready") != 0) return 7; /* unsolicited */

    int begun = 0, done = 0;
    uint32_t begin_seq = 0;
    for (;;) {
        int r = recv_frame(&type, &flags, &seq, payload, &len);
        if (r == CLOSED) return done ? 0 : 8;
        if (r == FATAL) return 9;
        if (flags != 0) { send_error(seq, "unsupported flags"); continue; }
        if (type == PCID_MSG_ERROR) { /* string message */
            uint16_t n = len >= PCID_ERROR_MIN_LEN ? pcid_get_u16(payload) : 0;
            if (n > len - 2) n = 0;
            fprintf(stderr, "pcid error %u: %.*s\n", (unsigned)seq, (int)n,
                    (const char *)payload + 2);
            continue;
        }
        if (done && (type == PCID_MSG_BEGIN || type == PCID_MSG_FINISH || type == PCID_MSG_SHUTDOWN)) {
            send_error(seq, "shutdown already finished");
            continue;
        }
        if (type == PCID_MSG_BEGIN) { /* kind, duration deadline */
            if (len != PCID_BEGIN_LEN ||
                (payload[0] != PCID_KIND_POWEROFF && payload[0] != PCID_KIND_REBOOT)) {
                send_error(seq, "malformed Begin");
                continue;
            }
            if (begun) { send_error(seq, "duplicate Begin"); continue; }
            begun = 1;
            begin_seq = seq;
            uint8_t ack[PCID_BEGIN_ACK_LEN];
            pcid_put_u64(ack, pcid_get_u64(payload + 1) / 2); /* budget: half the deadline */
            if (send_frame(PCID_MSG_BEGIN_ACK, seq, ack, PCID_BEGIN_ACK_LEN) != 0) return 10;
        } else if (type == PCID_MSG_FINISH) { /* duration deadline */
            if (len != PCID_FINISH_LEN) { send_error(seq, "malformed Finish"); continue; }
            if (!begun) { send_error(seq, "Finish before Begin"); continue; }
            uint32_t want = begin_seq == 0xffffffffu ? 1 : begin_seq + 1;
            if (seq != want) { send_error(seq, "Finish seq is not Begin seq + 1"); continue; }
            static const char detail[] = "c ok";
            uint8_t ack[PCID_FINISH_ACK_MIN_LEN + sizeof detail];
            ack[0] = PCID_OUTCOME_CLEAN;
            pcid_put_u64(ack + 1, 777); /* elapsed, µs */
            pcid_put_u16(ack + 9, (uint16_t)(sizeof detail - 1));
            memcpy(ack + 11, detail, sizeof detail - 1);
            if (send_frame(PCID_MSG_FINISH_ACK, seq, ack,
                           (uint32_t)(PCID_FINISH_ACK_MIN_LEN + sizeof detail - 1)) != 0)
                return 11;
            done = 1;
        } else {
            send_error(seq, "unexpected message type");
        }
    }
}
