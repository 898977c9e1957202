//! Confirmed publishing, one round at a time.
//!
//! A round is a batch of messages published in full (every message
//! persistent, delivery mode 2, and mandatory), then every publisher confirm
//! is awaited and checked on its own: lapin's `wait_for_confirms()` does not
//! report nacks. A message counts as accepted only when the broker acked it
//! *and* did not return it as unroutable; nothing reports success before its
//! confirm.
//!
//! Why one round at a time ([`Publisher::publish`] takes `&mut self`):
//! lapin does not pair a `basic.return` with the publish it belongs to; it
//! hands each returned message to whichever confirm completes next. Within
//! one round that is harmless, because every returned message carries its
//! index in the round as its `message_id` and is matched back by it. Across
//! rounds in flight together, a return could be given to another round's
//! confirm, and the returned message would be reported as stored.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation};

use crate::{Broker, Error};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// The header carrying how many delivery attempts a message has had.
pub const ATTEMPT_HEADER: &str = "x-verdant-attempt";

/// The header that carries the reason of a dead-lettered message.
pub const REASON_HEADER: &str = "x-verdant-reason";

/// Why one message of a round was not accepted by the broker. The sender
/// must treat it as not queued (the SMTP client gets a 4xx and retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker negatively acknowledged the message (it could not store
    /// it, e.g. a queue at its length limit with reject-publish).
    #[error("broker nacked the message")]
    Nacked,
    /// The message could not be routed to any queue and came back
    /// (mandatory publish).
    #[error("message returned by the broker: {code} {text}")]
    Returned {
        /// The AMQP reply code (312 NO_ROUTE).
        code: u16,
        /// The broker's explanation.
        text: String,
    },
    /// The publish or its confirm failed at the connection or channel level
    /// (broker gone, channel closed, no confirm in time): the outcome is
    /// unknown, so not accepted, and the channel is not to be trusted any
    /// more.
    #[error("broker error: {0}")]
    Broker(String),
}

impl PublishError {
    /// Whether the failure is the channel's (see [`PublishError::Broker`]),
    /// rather than the broker refusing this message.
    pub fn is_channel_failure(&self) -> bool {
        matches!(self, PublishError::Broker(_))
    }
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The queue (routing key on the default exchange).
    pub queue: String,
    /// The encoded message.
    pub data: Vec<u8>,
    /// Delivery attempts so far (the [`ATTEMPT_HEADER`]; 0: none sent).
    pub attempt: u32,
    /// Why it is dead-lettered (the [`REASON_HEADER`]).
    pub reason: Option<String>,
}

impl Outgoing {
    /// A new message for `queue`, no attempt made yet.
    pub fn new(queue: impl Into<String>, data: Vec<u8>) -> Self {
        Outgoing {
            queue: queue.into(),
            data,
            attempt: 0,
            reason: None,
        }
    }
}

/// A publisher on its own channel in confirm mode.
#[derive(Debug)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a channel on `broker` and enables publisher confirms on it.
    pub async fn new(broker: &Broker) -> Result<Self, Error> {
        let channel = broker.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel })
    }

    /// Whether the channel is still open.
    pub fn connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// Publishes one round: every item to the default exchange (routing key
    /// = queue name), persistent and mandatory, then awaits every confirm,
    /// all within `timeout`. The result has one entry per item, in order:
    /// `Ok` only for a message the broker acked and did not return. After a
    /// [`PublishError::Broker`] the channel should be dropped.
    pub async fn publish(
        &mut self,
        items: &[Outgoing],
        timeout: Duration,
    ) -> Vec<Result<(), PublishError>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let late =
            || PublishError::Broker(format!("no confirm from the broker within {timeout:?}"));
        let mut results: Vec<Result<(), PublishError>> = vec![Ok(()); items.len()];
        // All publishes in flight at once: each hands its frames to lapin's
        // I/O thread and waits for them to be written; awaiting them one
        // by one would cost a thread round trip per message. They are
        // first polled in order, so they take delivery tags and go out in
        // order.
        let publishes = items.iter().enumerate().map(|(i, item)| {
            self.channel.basic_publish(
                "".into(),
                item.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &item.data,
                properties(item, i),
            )
        });
        let sent =
            tokio::time::timeout_at(deadline, futures_util::future::join_all(publishes)).await;
        let Ok(sent) = sent else {
            // The socket is stalled.
            return vec![Err(late()); items.len()];
        };
        let mut pending = Vec::with_capacity(items.len());
        for (i, publish) in sent.into_iter().enumerate() {
            match publish {
                Ok(confirm) => pending.push(Some(confirm)),
                Err(e) => {
                    results[i] = Err(PublishError::Broker(e.to_string()));
                    pending.push(None);
                }
            }
        }
        let mut returned = Vec::new();
        for (i, confirm) in pending.into_iter().enumerate() {
            let Some(confirm) = confirm else { continue };
            let confirmation = match tokio::time::timeout_at(deadline, confirm).await {
                Ok(c) => c,
                Err(_) => {
                    results[i] = Err(late());
                    continue;
                }
            };
            match confirmation {
                // Acked: stored (persistent, durable queue), unless a
                // return names it.
                Ok(Confirmation::Ack(ret)) => returned.extend(ret),
                Ok(Confirmation::Nack(ret)) => {
                    results[i] = Err(PublishError::Nacked);
                    returned.extend(ret);
                }
                // Confirm mode is set in `new`; never count an unconfirmed
                // publish.
                Ok(Confirmation::NotRequested) => {
                    results[i] = Err(PublishError::Broker(
                        "publisher confirms not enabled on the channel".into(),
                    ));
                }
                Err(e) => results[i] = Err(PublishError::Broker(e.to_string())),
            }
        }
        for ret in returned {
            let error = PublishError::Returned {
                code: ret.reply_code,
                text: ret.reply_text.to_string(),
            };
            let index = ret
                .delivery
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| id.as_str().parse::<usize>().ok())
                .filter(|&i| i < items.len());
            match index {
                Some(i) => results[i] = Err(error),
                // Not ours to place: no message of the round can be
                // trusted to be stored.
                None => results.iter_mut().for_each(|r| *r = Err(error.clone())),
            }
        }
        results
    }
}

/// The properties of the `index`-th message of a round.
fn properties(item: &Outgoing, index: usize) -> BasicProperties {
    let props = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        // Matches a returned message back to its publish (see the module
        // documentation).
        .with_message_id(index.to_string().into());
    let mut headers = FieldTable::default();
    if item.attempt > 0 {
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(item.attempt));
    }
    if let Some(reason) = &item.reason {
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(reason.as_str().into()),
        );
    }
    if headers.inner().is_empty() {
        props
    } else {
        props.with_headers(headers)
    }
}

/// The attempt count of a consumed message (0 without the header).
pub(crate) fn attempt_of(props: &BasicProperties) -> u32 {
    match props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ATTEMPT_HEADER))
    {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u32::from(*n),
        _ => 0,
    }
}

/// The dead-letter reason of a consumed message.
pub(crate) fn reason_of(props: &BasicProperties) -> Option<String> {
    match props.headers().as_ref()?.inner().get(REASON_HEADER)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
        _ => None,
    }
}
