//! Consuming with a prefetch window and cumulative acknowledgements.
//!
//! The broker hands a [`Consumer`] at most `prefetch` unacknowledged
//! deliveries. The caller acknowledges with [`Consumer::ack_up_to`] (one
//! `basic.ack` with `multiple = true`) once the outcome of every delivery up
//! to that tag is durable: delivered, republished to a delay tier and
//! confirmed, or its bounce published and confirmed. A delivery that cannot
//! be handled at all goes to the dead-letter queue with
//! [`Consumer::dead_letter`].

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use verdant_queue::Record;
use verdant_queue::codec::{self, DecodeError};

use crate::publish::{Outgoing, Publisher, reason_of};
use crate::{Broker, Error, Topology};

/// How long a dead-lettering publish may wait for its confirm.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);

/// One message received from a queue, not yet acknowledged.
#[derive(Debug)]
pub struct Delivery {
    tag: u64,
    redelivered: bool,
    data: Vec<u8>,
    reason: Option<String>,
}

impl Delivery {
    /// The delivery tag (per channel, increasing), for [`Consumer::ack_up_to`].
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// Whether the broker delivered this message before (to a consumer that
    /// did not acknowledge it): it may be a duplicate.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The message bytes as published.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Decodes the bytes with [`verdant_queue::codec`].
    pub fn decode(&self) -> Result<Record<'_>, DecodeError> {
        codec::decode(&self.data)
    }

    /// The reason given to [`Consumer::dead_letter`], on messages read from
    /// the dead-letter queue.
    pub fn dead_letter_reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
}

/// A consumer of one queue on its own channel, with a publisher for the
/// dead-letter queue.
#[derive(Debug)]
pub struct Consumer {
    channel: Channel,
    consumer: lapin::Consumer,
    dead_letters: Publisher,
    dead_letter_queue: String,
    /// Delivered, not yet acknowledged tags: a cumulative ack is sent for
    /// the highest of them at or below the caller's tag (never for a tag
    /// already acknowledged, which the broker would reject).
    outstanding: Mutex<BTreeSet<u64>>,
}

static CONSUMER_SEQ: AtomicU64 = AtomicU64::new(0);

impl Consumer {
    /// Starts consuming `queue` (a name from `topology`) with at most
    /// `prefetch` unacknowledged deliveries; dead letters go to the
    /// topology's dead-letter queue.
    pub async fn new(
        broker: &Broker,
        topology: &Topology,
        queue: &str,
        prefetch: u16,
    ) -> Result<Self, Error> {
        let channel = broker.channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!(
            "verdant-{}-{}",
            std::process::id(),
            CONSUMER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let consumer = channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            channel,
            consumer,
            dead_letters: Publisher::new(broker).await?,
            dead_letter_queue: topology.dead_letter_queue(),
            outstanding: Mutex::new(BTreeSet::new()),
        })
    }

    /// The next delivery; `None` once the consumer is cancelled or its
    /// channel is closed.
    pub async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        let delivery = match self.consumer.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e.into())),
        };
        let reason = reason_of(&delivery.properties);
        self.outstanding
            .lock()
            .expect("outstanding tags")
            .insert(delivery.delivery_tag);
        Some(Ok(Delivery {
            tag: delivery.delivery_tag,
            redelivered: delivery.redelivered,
            data: delivery.data,
            reason,
        }))
    }

    /// Acknowledges every outstanding delivery with a tag `<= tag`, in one
    /// `basic.ack` with `multiple = true`. Call it only once the outcome of
    /// each of them is durable. Nothing outstanding up to `tag`: no-op.
    pub async fn ack_up_to(&self, tag: u64) -> Result<(), Error> {
        let highest = {
            let mut outstanding = self.outstanding.lock().expect("outstanding tags");
            let Some(&highest) = outstanding.range(..=tag).next_back() else {
                return Ok(());
            };
            let rest = outstanding.split_off(&(highest + 1));
            *outstanding = rest;
            highest
        };
        self.channel
            .basic_ack(highest, BasicAckOptions { multiple: true })
            .await?;
        Ok(())
    }

    /// Publishes `delivery` to the dead-letter queue with `reason` in the
    /// [`crate::publish::REASON_HEADER`] header, awaits the broker's confirm, then
    /// acknowledges this delivery alone. On error the delivery is not
    /// acknowledged (the broker redelivers it).
    pub async fn dead_letter(&mut self, delivery: &Delivery, reason: &str) -> Result<(), Error> {
        let item = Outgoing {
            reason: Some(reason.into()),
            ..Outgoing::new(self.dead_letter_queue.as_str(), delivery.data.clone())
        };
        if let Some(Err(e)) = self
            .dead_letters
            .publish(&[item], DEAD_LETTER_TIMEOUT)
            .await
            .pop()
        {
            return Err(e.into());
        }
        let removed = self
            .outstanding
            .lock()
            .expect("outstanding tags")
            .remove(&delivery.tag);
        if removed {
            self.channel
                .basic_ack(delivery.tag, BasicAckOptions { multiple: false })
                .await?;
        }
        Ok(())
    }
}
