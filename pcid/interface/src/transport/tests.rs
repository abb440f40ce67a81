//! Channel, spawn/adopt and control endpoint tests over real Unix sockets.

use super::*;
use crate::protocol::ShutdownKind;
use crate::wire::MAX_PAYLOAD_LEN;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};

const T: Option<Duration> = Some(Duration::from_secs(10));

fn begin(seq: u32) -> DriverMessage {
    DriverMessage::Begin {
        seq,
        kind: ShutdownKind::Poweroff,
        deadline: Duration::from_secs(3),
    }
}

#[test]
fn pair_round_trip_both_directions() {
    let (mut a, mut b) = DriverChannel::pair().expect("pair");
    a.send(&begin(1)).expect("send");
    assert_eq!(b.recv(T).expect("recv"), begin(1));
    b.send(&DriverMessage::Ready).expect("send");
    assert_eq!(a.recv(T).expect("recv"), DriverMessage::Ready);
}

#[test]
fn several_frames_in_one_read_are_all_delivered_in_order() {
    let (a, mut b) = DriverChannel::pair().expect("pair");
    let mut bytes = Vec::new();
    for seq in 0..50 {
        bytes.extend(begin(seq).encode().expect("encode"));
    }
    a.send_raw(&bytes).expect("send");
    for seq in 0..50 {
        assert_eq!(b.recv(T).expect("recv"), begin(seq));
    }
}

#[test]
fn partial_frame_survives_a_timeout() {
    let (raw, other) = UnixStream::pair().expect("pair");
    let mut rx = DriverChannel::from_stream(other);
    let frame = begin(9).encode().expect("encode");
    let mut w = &raw;
    w.write_all(&frame[..5]).expect("write");
    assert!(matches!(
        rx.recv(Some(Duration::ZERO)),
        Err(TransportError::Timeout(_))
    ));
    w.write_all(&frame[5..20]).expect("write");
    assert!(matches!(
        rx.recv(Some(Duration::from_millis(1))),
        Err(TransportError::Timeout(_))
    ));
    w.write_all(&frame[20..]).expect("write");
    assert_eq!(rx.recv(T).expect("recv"), begin(9));
}

#[test]
fn timeout_zero_takes_what_already_arrived() {
    let (a, mut b) = DriverChannel::pair().expect("pair");
    a.send(&DriverMessage::Ready).expect("send");
    // The frame is already in b's socket buffer (socketpair is synchronous).
    assert_eq!(
        b.recv(Some(Duration::ZERO)).expect("recv"),
        DriverMessage::Ready
    );
}

#[test]
fn eof_is_closed_and_mid_frame_eof_is_reported() {
    let (a, mut b) = DriverChannel::pair().expect("pair");
    drop(a);
    assert!(matches!(b.recv(T), Err(TransportError::Closed)));
    assert!(matches!(b.recv(T), Err(TransportError::Broken)));

    let (raw, other) = UnixStream::pair().expect("pair");
    let mut rx = DriverChannel::from_stream(other);
    (&raw)
        .write_all(&begin(1).encode().expect("encode")[..10])
        .expect("write");
    drop(raw);
    assert!(matches!(
        rx.recv(T),
        Err(TransportError::ClosedMidFrame { buffered: 10 })
    ));
}

#[test]
fn oversize_length_is_rejected_without_allocating() {
    let (raw, other) = UnixStream::pair().expect("pair");
    let mut rx = DriverChannel::from_stream(other);
    let mut f = begin(4).encode().expect("encode");
    f[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    (&raw).write_all(&f).expect("write");
    let e = rx.recv(T).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Malformed {
                seq: 4,
                error: DecodeError::Oversize { .. }
            }
        ),
        "{e:?}"
    );
    assert!(e.is_fatal());
    assert!(rx.rx.capacity() < MAX_PAYLOAD_LEN, "{}", rx.rx.capacity());
    assert!(matches!(rx.recv(T), Err(TransportError::Broken)));
}

#[test]
fn garbage_is_fatal_but_unknown_type_is_not() {
    let (a, mut b) = DriverChannel::pair().expect("pair");
    // A well-framed message of an unknown type, then a valid one.
    let mut unknown = begin(5).encode().expect("encode");
    unknown[6] = 0x30;
    a.send_raw(&unknown).expect("send");
    a.send(&begin(6)).expect("send");
    let e = b.recv(T).unwrap_err();
    assert!(matches!(
        e,
        TransportError::Malformed {
            seq: 5,
            error: DecodeError::UnknownMessageType { msg_type: 0x30 }
        }
    ));
    assert!(!e.is_fatal());
    assert_eq!(b.recv(T).expect("recv"), begin(6));

    a.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let e = b.recv(T).unwrap_err();
    assert!(matches!(
        e,
        TransportError::Malformed {
            error: DecodeError::BadMagic { .. },
            ..
        }
    ));
    assert!(e.is_fatal());
}

#[test]
fn sender_writes_while_another_thread_blocks_in_recv() {
    let (mut a, mut b) = DriverChannel::pair().expect("pair");
    let tx = a.sender();
    let reader = std::thread::spawn(move || a.recv(T));
    // b waits for the reader thread's peer to send: only the Sender can.
    let echo = std::thread::spawn(move || {
        let got = b.recv(T)?;
        b.send(&got)?;
        Ok::<_, TransportError>(got)
    });
    tx.send(&begin(77)).expect("send via Sender");
    assert_eq!(echo.join().expect("join").expect("echo"), begin(77));
    assert_eq!(reader.join().expect("join").expect("recv"), begin(77));
}

#[test]
fn shutdown_wakes_a_blocked_reader() {
    let (mut a, _b) = DriverChannel::pair().expect("pair");
    let tx = a.sender();
    let reader = std::thread::spawn(move || a.recv(T));
    tx.shutdown().expect("shutdown");
    assert!(matches!(
        reader.join().expect("join"),
        Err(TransportError::Closed)
    ));
}

#[test]
fn send_to_a_peer_that_never_reads_times_out() {
    let (mut a, _b) = DriverChannel::pair().expect("pair");
    a.set_send_timeout(Duration::from_millis(20));
    let big = DriverMessage::Error {
        seq: 1,
        message: "x".repeat(1000),
    };
    let mut result = Ok(());
    // The socket buffer holds a finite number of frames.
    for _ in 0..100_000 {
        result = a.send(&big);
        if result.is_err() {
            break;
        }
    }
    assert!(
        matches!(result, Err(TransportError::SendTimeout(_))),
        "{result:?}"
    );
}

#[test]
fn send_to_a_closed_peer_is_closed_not_sigpipe() {
    let (a, b) = DriverChannel::pair().expect("pair");
    drop(b);
    assert!(matches!(
        a.send(&DriverMessage::Ready),
        Err(TransportError::Closed)
    ));
}

// --- spawn_with_channel / from_env --------------------------------------

/// Environment marker that turns `adopted_channel_child` into the child side.
const CHILD_MARKER: &str = "PCID_INTERFACE_TEST_CHILD";

/// The child side of `spawn_passes_channel_and_child_adopts_it`. Run normally
/// (no marker), it does nothing.
#[test]
fn adopted_channel_child() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    let mut ch = DriverChannel::from_env().expect("adopt");
    assert!(std::env::var_os(crate::PCID_CLIENT_CHANNEL).is_none());
    let flags = rustix::io::fcntl_getfd(&ch).expect("getfd");
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    assert!(matches!(
        DriverChannel::from_env(),
        Err(AdoptError::NotSet { .. })
    ));
    let msg = ch.recv(T).expect("recv");
    ch.send(&msg).expect("echo");
}

#[test]
fn spawn_passes_channel_and_child_adopts_it() {
    let (mut ours, theirs) = DriverChannel::pair().expect("pair");
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--exact",
        "transport::tests::adopted_channel_child",
        "--test-threads=1",
        "--quiet",
    ])
    .env(CHILD_MARKER, "1")
    .stdout(std::process::Stdio::null());
    let mut child = spawn_with_channel(&mut cmd, theirs).expect("spawn");
    ours.send(&begin(31)).expect("send");
    let echoed = ours.recv(T);
    let status = child.wait().expect("wait");
    assert!(status.success(), "child failed: {status}");
    assert_eq!(echoed.expect("echo"), begin(31));
    // The child exited and this process kept no copy of its end: EOF.
    assert!(matches!(ours.recv(T), Err(TransportError::Closed)));
}

/// All cases that touch this process's `PCID_CLIENT_CHANNEL`, in one test so
/// they do not race with each other.
#[test]
fn from_env_rejects_bad_values_without_closing_anything() {
    let var = crate::PCID_CLIENT_CHANNEL;
    std::env::remove_var(var);
    assert!(matches!(
        DriverChannel::from_env(),
        Err(AdoptError::NotSet { .. })
    ));
    for bad in ["", "abc", "-1", "1", "2"] {
        std::env::set_var(var, bad);
        assert!(
            matches!(
                DriverChannel::from_env(),
                Err(AdoptError::InvalidValue { .. })
            ),
            "{bad:?}"
        );
    }
    // A number that is not an open fd.
    std::env::set_var(var, "999999");
    assert!(matches!(
        DriverChannel::from_env(),
        Err(AdoptError::NotOpen { fd: 999999, .. })
    ));
    // An open fd that is not a socket must be left open.
    let file = std::fs::File::open("/dev/null").expect("open");
    std::env::set_var(var, file.as_fd().as_raw_fd_string());
    assert!(matches!(
        DriverChannel::from_env(),
        Err(AdoptError::NotASocket { .. })
    ));
    assert!(rustix::io::fcntl_getfd(&file).is_ok(), "fd was closed");
    // A datagram socket is not a stream socket.
    let (d, _d2) = std::os::unix::net::UnixDatagram::pair().expect("pair");
    std::env::set_var(var, d.as_fd().as_raw_fd_string());
    assert!(matches!(
        DriverChannel::from_env(),
        Err(AdoptError::NotASocket { .. })
    ));
    assert!(rustix::io::fcntl_getfd(&d).is_ok(), "fd was closed");
    std::env::remove_var(var);
}

trait RawFdString {
    fn as_raw_fd_string(&self) -> String;
}

impl RawFdString for BorrowedFd<'_> {
    fn as_raw_fd_string(&self) -> String {
        use std::os::fd::AsRawFd;
        self.as_raw_fd().to_string()
    }
}

// --- control endpoint ----------------------------------------------------

fn temp_socket_path(tag: &str) -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "pcid-if-test-{}-{}-{tag}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

#[test]
fn control_socket_mode_peer_cred_and_round_trip() {
    use std::os::unix::fs::PermissionsExt;
    let path = temp_socket_path("basic");
    let listener = ControlListener::bind(&path).expect("bind");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let client = std::thread::spawn({
        let path = path.clone();
        move || -> Result<ControlMessage, String> {
            let mut c = ControlClient::connect(&path).map_err(|e| e.to_string())?;
            c.send(&ControlMessage::ListDevices { id: 3 })
                .map_err(|e| e.to_string())?;
            c.recv(T).map_err(|e| e.to_string())
        }
    });
    let (mut conn, cred) = listener.accept(T).expect("accept");
    assert_eq!(cred.pid, std::process::id());
    assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
    assert!(cred.is_same_user());
    assert_eq!(conn.peer_cred().expect("cred"), cred);
    assert_eq!(
        conn.recv(T).expect("recv"),
        ControlMessage::ListDevices { id: 3 }
    );
    conn.send(&ControlMessage::Devices {
        id: 3,
        devices: vec![],
    })
    .expect("send");
    assert_eq!(
        client.join().expect("join").expect("client"),
        ControlMessage::Devices {
            id: 3,
            devices: vec![]
        }
    );
    drop(listener);
    assert!(!path.exists(), "socket file removed on drop");
}

#[test]
fn connect_without_pcid_says_so() {
    let path = temp_socket_path("absent");
    let e = ControlClient::connect(&path).unwrap_err();
    assert!(matches!(e, ControlError::NotRunning { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "pcid is not running: no control socket at {}",
            path.display()
        )
    );
    // A socket file nobody listens on (pcid died) says so.
    let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    drop(l);
    assert!(matches!(
        ControlClient::connect(&path),
        Err(ControlError::Stale { .. })
    ));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bind_replaces_stale_socket_but_not_live_socket_or_file() {
    let path = temp_socket_path("stale");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let live = ControlListener::bind(&path).expect("stale socket replaced");
    assert!(matches!(
        ControlListener::bind(&path),
        Err(ControlError::AlreadyRunning { .. })
    ));
    assert!(path.exists(), "live socket left in place");
    drop(live);

    let file = temp_socket_path("file");
    std::fs::write(&file, b"keep me").expect("write");
    assert!(matches!(
        ControlListener::bind(&file),
        Err(ControlError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read(&file).expect("read"), b"keep me");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn accept_is_bounded() {
    let path = temp_socket_path("timeout");
    let listener = ControlListener::bind(&path).expect("bind");
    assert!(matches!(
        listener.accept(Some(Duration::from_millis(5))),
        Err(ControlError::Timeout(_))
    ));
}

#[test]
fn huge_timeouts_do_not_overflow() {
    let (mut a, mut b) = DriverChannel::pair().expect("pair");
    a.set_send_timeout(Duration::MAX);
    a.send(&DriverMessage::Ready).expect("send");
    assert_eq!(
        b.recv(Some(Duration::MAX)).expect("recv"),
        DriverMessage::Ready
    );
    let path = temp_socket_path("huge");
    let listener = ControlListener::bind(&path).expect("bind");
    let _c = ControlClient::connect(&path).expect("connect");
    assert!(listener.accept(Some(Duration::MAX)).is_ok());
}

#[test]
fn try_recv_takes_buffered_frames_then_reads_once() {
    let (a, mut b) = DriverChannel::pair().expect("pair");
    assert!(b.try_recv().expect("nothing yet").is_none());
    let mut bytes = Vec::new();
    for seq in 0..3 {
        bytes.extend(begin(seq).encode().expect("encode"));
    }
    // Half of a fourth frame.
    let fourth = begin(3).encode().expect("encode");
    bytes.extend_from_slice(&fourth[..7]);
    a.send_raw(&bytes).expect("send");
    assert!(!b.has_buffered_frame());
    assert_eq!(b.try_recv().expect("first"), Some(begin(0)));
    assert!(b.has_buffered_frame(), "two more are in the buffer");
    assert_eq!(b.try_recv().expect("second"), Some(begin(1)));
    assert_eq!(b.try_recv().expect("third"), Some(begin(2)));
    assert!(!b.has_buffered_frame(), "only part of the fourth");
    assert_eq!(b.try_recv().expect("partial"), None);
    a.send_raw(&fourth[7..]).expect("send");
    assert_eq!(b.try_recv().expect("fourth"), Some(begin(3)));
    drop(a);
    assert!(matches!(b.try_recv(), Err(TransportError::Closed)));
    assert!(matches!(b.try_recv(), Err(TransportError::Broken)));
}

#[test]
fn try_recv_reports_a_bad_header_and_mid_frame_eof() {
    let (raw, other) = UnixStream::pair().expect("pair");
    let mut rx = DriverChannel::from_stream(other);
    (&raw).write_all(&[0x55; HEADER_LEN]).expect("write");
    let e = rx.try_recv().unwrap_err();
    assert!(
        matches!(e, TransportError::Malformed { seq: 0, .. }),
        "{e:?}"
    );
    assert!(e.is_fatal());

    let (raw, other) = UnixStream::pair().expect("pair");
    let mut rx = DriverChannel::from_stream(other);
    (&raw)
        .write_all(&begin(1).encode().expect("encode")[..10])
        .expect("write");
    assert_eq!(rx.try_recv().expect("partial"), None);
    drop(raw);
    assert!(matches!(
        rx.try_recv(),
        Err(TransportError::ClosedMidFrame { buffered: 10 })
    ));
}

/// Queues large frames on `a` until the peer's socket buffer is full and
/// some bytes stay queued; returns how many frames were queued.
fn fill_until_queued(a: &DriverChannel, frame: &DriverMessage) -> usize {
    let mut n = 0;
    while a.queued() == 0 {
        a.queue(frame).expect("queue");
        n += 1;
        assert!(n < 100_000, "the socket never filled");
    }
    n
}

#[test]
fn queue_never_waits_and_flush_delivers_everything_in_order() {
    let (a, mut b) = DriverChannel::pair().expect("pair");
    let big = |seq: u32| DriverMessage::Error {
        seq,
        message: "x".repeat(1000),
    };
    let mut sent = 0u32;
    while a.queued() == 0 {
        a.queue(&big(sent)).expect("queue");
        sent += 1;
        assert!(sent < 100_000, "the socket never filled");
    }
    assert!(a.stalled_since().is_some());
    // More while the peer reads nothing: queued, not sent, no wait.
    for _ in 0..10 {
        a.queue(&big(sent)).expect("queue");
        sent += 1;
    }
    assert!(!a.flush().expect("flush"), "the peer has not read");
    // The peer reads; flushing whenever the socket takes more delivers every
    // frame exactly once, in order.
    for seq in 0..sent {
        let _ = a.flush().expect("flush");
        assert_eq!(b.recv(T).expect("recv"), big(seq));
    }
    assert!(a.flush().expect("flush"));
    assert_eq!(a.queued(), 0);
    assert_eq!(a.stalled_since(), None);
}

#[test]
fn a_blocking_send_goes_after_what_is_queued() {
    let (a, mut b) = DriverChannel::pair().expect("pair");
    let big = DriverMessage::Error {
        seq: 7,
        message: "y".repeat(1000),
    };
    let queued = fill_until_queued(&a, &big);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..=queued {
            seen.push(b.recv(T).expect("recv"));
        }
        seen
    });
    a.send(&DriverMessage::Ready).expect("send");
    let seen = reader.join().expect("reader");
    assert_eq!(seen.len(), queued + 1);
    assert!(seen[..queued].iter().all(|m| *m == big));
    assert_eq!(seen[queued], DriverMessage::Ready);
    assert_eq!(a.queued(), 0);
}

#[test]
fn a_blocking_send_that_times_out_behind_the_queue_is_taken_back() {
    let (mut a, mut b) = DriverChannel::pair().expect("pair");
    a.set_send_timeout(Duration::from_millis(20));
    let big = DriverMessage::Error {
        seq: 7,
        message: "z".repeat(1000),
    };
    let queued = fill_until_queued(&a, &big);
    let before = a.queued();
    assert!(matches!(
        a.send(&DriverMessage::Ready),
        Err(TransportError::SendTimeout(_))
    ));
    assert_eq!(a.queued(), before, "the refused frame is not left queued");
    // The channel still works: the queued frames arrive, and nothing else.
    let mut got = 0;
    while got < queued {
        let _ = a.flush().expect("flush");
        assert_eq!(b.recv(T).expect("recv"), big);
        got += 1;
    }
    assert!(matches!(
        b.recv(Some(Duration::from_millis(50))),
        Err(TransportError::Timeout(_))
    ));
}

#[test]
fn the_queue_is_bounded() {
    let (a, _b) = DriverChannel::pair().expect("pair");
    let big = DriverMessage::Error {
        seq: 1,
        message: "w".repeat(crate::wire::MAX_TEXT_LEN),
    };
    let mut result = Ok(());
    for _ in 0..(MAX_QUEUED / 1000 + 1000) {
        result = a.queue(&big);
        if result.is_err() {
            break;
        }
    }
    match result {
        Err(TransportError::Backlog { queued }) => {
            assert!(queued <= MAX_QUEUED);
            assert!(queued > MAX_QUEUED / 2, "{queued}");
        }
        other => panic!("expected Backlog, got {other:?}"),
    }
    assert!(a.queued() <= MAX_QUEUED);
}

#[test]
fn recv_writes_what_is_queued_while_it_waits() {
    let (a, b) = DriverChannel::pair().expect("pair");
    let mut a = a;
    let big = DriverMessage::Error {
        seq: 3,
        message: "v".repeat(1000),
    };
    let queued = fill_until_queued(&a, &big);
    // The peer reads everything and answers once; `a` only receives.
    let peer = std::thread::spawn(move || {
        let mut b = b;
        for _ in 0..queued {
            assert_eq!(b.recv(T).expect("recv"), big);
        }
        b.send(&DriverMessage::Ready).expect("answer");
    });
    assert_eq!(a.recv(T).expect("answer"), DriverMessage::Ready);
    peer.join().expect("peer");
    assert_eq!(a.queued(), 0);
}

#[test]
fn queue_to_a_closed_peer_is_closed() {
    let (a, b) = DriverChannel::pair().expect("pair");
    drop(b);
    assert!(matches!(
        a.queue(&DriverMessage::Ready),
        Err(TransportError::Closed)
    ));
    assert!(matches!(a.flush(), Err(TransportError::Broken)));
}
