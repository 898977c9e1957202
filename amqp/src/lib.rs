//! RabbitMQ (AMQP 0-9-1) backend of the queue boundary, for scale-out.
//!
//! When one machine is not enough, `verdant receiver` and `verdant engine`
//! run as separate processes that exchange messages through RabbitMQ. This
//! crate is the only one that names lapin; the rest of Verdant sees:
//!
//! - [`Broker`]: one connection to the broker (a URL such as
//!   `amqp://guest:guest@127.0.0.1:5672`);
//! - [`topology::Topology`]: the versioned queues (delivery, delay tiers,
//!   dead letters), declared idempotently at start;
//! - [`publish::Publisher`]: batches published persistent and mandatory
//!   with publisher confirms; every confirm is checked one by one;
//! - [`consume::Consumer`]: prefetch-limited consumption, acknowledgements
//!   with `multiple = true` once outcomes are durable, and dead-lettering
//!   with a reason.
//!
//! Messages travel in the compact binary encoding of
//! [`verdant_queue::codec`]. Everything here is async and runs on tokio
//! (the services thread); lapin's own I/O loop runs on a thread of its own.
#![warn(missing_docs)]

pub mod ack;
pub mod consume;
pub mod publish;
pub mod service;
pub mod topology;
pub mod worker;

pub use consume::{Consumer, Delivery};
pub use publish::{Outgoing, PublishError, Publisher};
pub use topology::{QueueKind, Topology};

use lapin::{Connection, ConnectionProperties};

/// An error talking to the broker (connection, channel or protocol level).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The AMQP client reported an error (connection refused, channel
    /// closed by the broker, precondition failed on a declaration, ...).
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    /// A confirmed publish made on our behalf (e.g. to the dead-letter
    /// queue) was not accepted by the broker.
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
}

/// One connection to a RabbitMQ broker; channels are opened on it by the
/// publisher, the consumers and topology declaration.
#[derive(Debug)]
pub struct Broker {
    conn: Connection,
}

impl Broker {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`, the vhost
    /// URL-encoded; no vhost means `/`). Must be called inside a tokio
    /// runtime.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_as(url, "verdant").await
    }

    /// [`Broker::connect`], with the connection name the broker shows (in
    /// `rabbitmqctl list_connections client_properties`).
    pub async fn connect_as(url: &str, name: &str) -> Result<Self, Error> {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let conn = Connection::connect(url, props).await?;
        Ok(Self { conn })
    }

    /// Opens a new channel on the connection.
    pub(crate) async fn channel(&self) -> Result<lapin::Channel, Error> {
        Ok(self.conn.create_channel().await?)
    }

    /// Closes the connection cleanly (unacknowledged deliveries go back to
    /// their queues).
    pub async fn close(&self) -> Result<(), Error> {
        self.conn.close(200, "bye".into()).await?;
        Ok(())
    }
}
