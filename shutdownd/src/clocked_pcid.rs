//! pcid in-process on a fake clock, for tests of the loops that talk to pcid: it
//! answers each request after a fixed delay as its `answer` function says,
//! records what was sent and how far shutdownd asked to wait, and moves the
//! clock only while shutdownd waits.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use pcid_interface::protocol::{ControlMessage, FinishOutcome};

use crate::run::{ControlPort, PortError};

/// How a [`ClockedPcid`] answers a request (`None`: it never does).
pub type Answer = Box<dyn FnMut(&ControlMessage) -> Option<ControlMessage>>;

/// What a healthy driver behind pcid answers: `BeginAck(budget)` to a
/// `Begin`, a clean `FinishAck` (1 ms measured) to a `Finish`; `None` to
/// anything else.
pub fn ack(msg: &ControlMessage, budget: Duration) -> Option<ControlMessage> {
    match *msg {
        ControlMessage::Begin { id, address, .. } => Some(ControlMessage::BeginAck {
            id,
            address,
            budget,
        }),
        ControlMessage::Finish { id, address, .. } => Some(ControlMessage::FinishAck {
            id,
            address,
            outcome: FinishOutcome::Clean,
            elapsed: Duration::from_millis(1),
            detail: String::new(),
        }),
        _ => None,
    }
}

/// See the module documentation.
pub struct ClockedPcid {
    clock: Rc<Cell<Duration>>,
    delay: Duration,
    answer: Answer,
    /// Answers not yet taken, with the instant each is due.
    pending: Vec<(Duration, ControlMessage)>,
    /// Every request, with the instant it was sent.
    pub sent: Vec<(Duration, ControlMessage)>,
    /// The latest instant shutdownd asked to wait until.
    pub latest_wait_end: Duration,
}

impl ClockedPcid {
    /// A pcid on `clock` answering after `delay`.
    pub fn new(clock: Rc<Cell<Duration>>, delay: Duration, answer: Answer) -> Self {
        Self {
            clock,
            delay,
            answer,
            pending: Vec::new(),
            sent: Vec::new(),
            latest_wait_end: Duration::ZERO,
        }
    }
}

impl ControlPort for ClockedPcid {
    fn send(&mut self, msg: &ControlMessage) -> Result<(), PortError> {
        let at = self.clock.get();
        self.sent.push((at, msg.clone()));
        if let Some(answer) = (self.answer)(msg) {
            self.pending.push((at + self.delay, answer));
        }
        Ok(())
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<ControlMessage>, PortError> {
        let end = self.clock.get() + timeout;
        self.latest_wait_end = self.latest_wait_end.max(end);
        self.pending.sort_by_key(|(at, _)| *at);
        match self.pending.first() {
            Some((at, _)) if *at <= end => {
                let (at, msg) = self.pending.remove(0);
                self.clock.set(self.clock.get().max(at));
                Ok(Some(msg))
            }
            _ => {
                self.clock.set(end);
                Ok(None)
            }
        }
    }
}
