//! The sink's two hooks into the receiver: a [`Queue`] that counts,
//! measures and optionally keeps messages instead of storing them, and a
//! [`RecipientHook`] that refuses recipients. Both are per worker and share
//! that worker's [`WorkerState`].

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;

use verdant_queue::{Envelope, IdGenerator, Queue, QueueError, QueueId, now_micros};
use verdant_receiver::policy::RecipientHook;

use super::faults::Injector;
use super::keep::keep;
use super::stats::Tally;
use crate::stamp::find_sent;

/// The reply to messages that complete while the worker is stopping: after
/// its last report, nothing may be accepted, or a client would hold a 250
/// the report does not count.
const STOPPING: &str = "451 4.3.2 Verdant sink is shutting down, try again later";

/// What one worker's sessions share. Lives on the worker's thread only.
pub(crate) struct WorkerState {
    /// Counts since the last hand-over to the reporter.
    pub(crate) tally: RefCell<Tally>,
    /// Failure decisions, with the worker's PRNG.
    pub(crate) injector: RefCell<Injector>,
    /// Set once the worker made its final report.
    pub(crate) stopping: Cell<bool>,
}

impl WorkerState {
    pub(crate) fn new(injector: Injector) -> WorkerState {
        WorkerState {
            tally: RefCell::new(Tally::new()),
            injector: RefCell::new(injector),
            stopping: Cell::new(false),
        }
    }
}

/// The sink's "queue": decides whether to refuse the message, keeps it if
/// asked, counts it and records its latency. Nothing is stored otherwise:
/// a 250 from the sink means only that the message arrived whole.
pub(crate) struct SinkQueue {
    ids: RefCell<IdGenerator>,
    state: Rc<WorkerState>,
    keep: Option<PathBuf>,
}

impl SinkQueue {
    pub(crate) fn new(worker: u16, state: Rc<WorkerState>, keep: Option<PathBuf>) -> SinkQueue {
        SinkQueue {
            ids: RefCell::new(IdGenerator::new(worker, 0)),
            state,
            keep,
        }
    }
}

impl Queue for SinkQueue {
    fn next_id(&self) -> QueueId {
        self.ids.borrow_mut().next_id()
    }

    async fn enqueue(
        &self,
        id: QueueId,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), QueueError> {
        // Arrival time, before anything the sink itself spends time on.
        let now = now_micros();
        let st = &self.state;
        if st.stopping.get() {
            return Err(QueueError::Rejected(STOPPING.into()));
        }
        let refused = st.injector.borrow_mut().message();
        if let Some((class, reply)) = refused {
            st.tally.borrow_mut().refuse_message(class);
            return Err(QueueError::Rejected(reply));
        }
        let sent = find_sent(message);
        if let Some(dir) = &self.keep {
            keep(dir, id, envelope, message)
                .await
                .map_err(|e| QueueError::Storage(e.kind()))?;
            // The worker may have made its final report during the writes.
            if st.stopping.get() {
                return Err(QueueError::Rejected(STOPPING.into()));
            }
        }
        st.tally
            .borrow_mut()
            .accept(now, envelope.recipients.len(), message.len(), sent);
        Ok(())
    }
}

/// Refuses recipients as the worker's [`Injector`] decides, counting them.
pub(crate) struct Refuser(pub(crate) Rc<WorkerState>);

impl RecipientHook for Refuser {
    fn check(&self, recipient: &str) -> Option<String> {
        let (class, reply) = self.0.injector.borrow_mut().recipient(recipient)?;
        self.0.tally.borrow_mut().refuse_recipient(class);
        Some(reply)
    }
}
