//! Confirmed batch publishing.
//!
//! A batch is published in full (every message persistent, delivery mode
//! 2, and mandatory), then every publisher confirm is awaited and checked
//! on its own: lapin's `wait_for_confirms()` does not report nacks. A
//! message counts as accepted only when the broker acked it *and* did not
//! return it as unroutable; nothing reports success before its confirm.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation};

use crate::{Broker, Error};

/// AMQP delivery mode 2: the broker writes the message to disk.
pub(crate) const PERSISTENT: u8 = 2;

/// Why one message of a batch was not accepted by the broker. The sender
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
    /// (broker gone, channel closed): the outcome is unknown, so not accepted.
    #[error("broker error: {0}")]
    Broker(String),
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

    /// Publishes every `(routing key, bytes)` of `batch` to the default
    /// exchange (routing key = queue name), persistent and mandatory, then
    /// awaits every confirm. The result has one entry per message, in
    /// order: `Ok` only for a message the broker acked and did not return.
    pub async fn publish_batch<R, B>(&self, batch: &[(R, B)]) -> Vec<Result<(), PublishError>>
    where
        R: AsRef<str>,
        B: AsRef<[u8]>,
    {
        let mut pending = Vec::with_capacity(batch.len());
        for (routing, bytes) in batch {
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    routing.as_ref().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    bytes.as_ref(),
                    properties(None),
                )
                .await;
            pending.push(confirm);
        }
        let mut results = Vec::with_capacity(pending.len());
        for confirm in pending {
            results.push(match confirm {
                Ok(confirm) => check(confirm.await),
                Err(e) => Err(PublishError::Broker(e.to_string())),
            });
        }
        results
    }

    /// Publishes one message with a string header and awaits its confirm
    /// (dead-lettering with a reason).
    pub(crate) async fn publish_one_with_header(
        &self,
        routing: &str,
        bytes: &[u8],
        header: (&str, &str),
    ) -> Result<(), PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                routing.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                bytes,
                properties(Some(header)),
            )
            .await
            .map_err(|e| PublishError::Broker(e.to_string()))?;
        check(confirm.await)
    }
}

fn properties(header: Option<(&str, &str)>) -> BasicProperties {
    let props = BasicProperties::default().with_delivery_mode(PERSISTENT);
    match header {
        None => props,
        Some((name, value)) => {
            let mut headers = FieldTable::default();
            headers.insert(name.into(), AMQPValue::LongString(value.into()));
            props.with_headers(headers)
        }
    }
}

/// Maps one publisher confirm to the message's fate.
pub(crate) fn check(confirmation: lapin::Result<Confirmation>) -> Result<(), PublishError> {
    match confirmation {
        // Acked and not returned: stored (persistent, durable queue).
        Ok(Confirmation::Ack(None)) => Ok(()),
        // Unroutable messages are acked after being returned: not queued.
        Ok(Confirmation::Ack(Some(ret))) | Ok(Confirmation::Nack(Some(ret))) => {
            Err(PublishError::Returned {
                code: ret.reply_code,
                text: ret.reply_text.to_string(),
            })
        }
        Ok(Confirmation::Nack(None)) => Err(PublishError::Nacked),
        // Confirm mode is set in `new`; never count an unconfirmed publish.
        Ok(Confirmation::NotRequested) => Err(PublishError::Broker(
            "publisher confirms not enabled on the channel".into(),
        )),
        Err(e) => Err(PublishError::Broker(e.to_string())),
    }
}
