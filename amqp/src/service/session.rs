//! One session with the broker: a publishing connection, a consuming
//! connection (when the process delivers), the publish rounds and the
//! consumers. A session ends at the first sign of trouble; the service
//! then opens a new one (a new generation).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::{Stream, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Event};
use tokio::sync::mpsc;
use verdant_queue::Ticket;

use super::{Command, Incoming, PublishReply, ServiceConfig, SettleError, SettleReply, Shared};
use crate::Broker;
use crate::ack::{Ack, AckTracker, coalesce};
use crate::publish::{Outgoing, PublishError, Publisher, attempt_of};

/// How long closing a connection may take before it is abandoned.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a session ended.
pub(super) enum End {
    /// The process is stopping: every handle is gone, or one asked to
    /// close (and waits for the answer).
    Closed(Option<flume::Sender<()>>),
    /// Something failed; the text says what.
    Lost(String),
}

type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// One consumer channel and where its acks go.
struct ConsumerLink {
    channel: Channel,
    acks: Arc<Mutex<AckTracker>>,
    /// Acks in the order computed, sent by one task per channel (a multiple
    /// ack overtaking an earlier single one would name an acked tag).
    ack_tx: mpsc::UnboundedSender<Ack>,
}

impl ConsumerLink {
    /// The outcome of `tag` is durable: queue the acks that makes due.
    fn settled(&self, tag: u64) {
        // Computed and queued under one lock, so they go out in order.
        let mut tracker = self.acks.lock().expect("ack tracker");
        for ack in tracker.settle(tag) {
            let _ = self.ack_tx.send(ack);
        }
    }
}

/// The live session.
pub(super) struct Session {
    generation: u64,
    publish_conn: Broker,
    publish_events: Events,
    consume_conn: Option<(Broker, Events)>,
    publisher: Publisher,
    consumers: Vec<ConsumerLink>,
    /// A consumer stream ended, or acks could not be sent.
    lost: mpsc::UnboundedReceiver<String>,
    /// Keeps `lost` open in a process without consumers.
    _lost_tx: mpsc::UnboundedSender<String>,
    /// The consumers' forwarding tasks, stopped with the session.
    forwarders: Vec<tokio::task::JoinHandle<()>>,
    /// The consumers' ack senders, which end once their queues are drained.
    ackers: Vec<tokio::task::JoinHandle<()>>,
}

/// Who waits for which part of a publish round.
enum Job {
    Publish {
        n: usize,
        reply: PublishReply,
    },
    Settle {
        ticket: Ticket,
        n: usize,
        reply: SettleReply,
    },
}

/// A round in flight: it owns the publisher and hands it back.
type Round = Pin<Box<dyn Future<Output = (Publisher, Vec<Job>, Vec<Result<(), PublishError>>)>>>;

async fn connect(cfg: &ServiceConfig, name: &str) -> Result<(Broker, Events), String> {
    let broker = tokio::time::timeout(cfg.confirm_timeout, Broker::connect_as(&cfg.url, name))
        .await
        .map_err(|_| format!("no connection within {:?}", cfg.confirm_timeout))?
        .map_err(|e| e.to_string())?;
    // Listen at once: lapin passes on events only while someone listens,
    // and a connection.blocked must not slip by.
    let events: Events = Box::pin(broker.conn.events_listener());
    Ok((broker, events))
}

async fn close(broker: &Broker) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, broker.close()).await;
}

impl Session {
    /// Connects, declares the topology, opens the publisher and the
    /// consumers, and makes `generation` the live one.
    pub(super) async fn open(
        cfg: &ServiceConfig,
        generation: u64,
        incoming: &[flume::Sender<Incoming>],
        shared: &Shared,
    ) -> Result<Session, String> {
        let (publish_conn, publish_events) = connect(cfg, "verdant publish").await?;
        let consume_conn = if incoming.is_empty() {
            None
        } else {
            match connect(cfg, "verdant consume").await {
                Ok(c) => Some(c),
                Err(e) => {
                    close(&publish_conn).await;
                    return Err(e);
                }
            }
        };
        let consume = consume_conn.as_ref().map(|(b, _)| b);
        let setup = tokio::time::timeout(
            cfg.confirm_timeout,
            setup(cfg, &publish_conn, consume, incoming.len()),
        )
        .await
        .map_err(|_| format!("no answer from the broker within {:?}", cfg.confirm_timeout))
        .and_then(|r| r.map_err(|e| e.to_string()));
        let (publisher, channels) = match setup {
            Ok(x) => x,
            Err(e) => {
                close(&publish_conn).await;
                if let Some((b, _)) = &consume_conn {
                    close(b).await;
                }
                return Err(e);
            }
        };
        // The generation goes live before the first delivery can reach a
        // worker: a worker drops deliveries of any other generation as
        // already given back to the queue, and one of the live connection
        // dropped so would stay unacknowledged, never delivered, until the
        // connection closes. (Publishes made from now on wait in the command
        // channel until `serve` reads them.)
        shared.set_blocked(false);
        shared.set_generation(generation);
        let (lost_tx, lost) = mpsc::unbounded_channel();
        let (mut forwarders, mut ackers) = (Vec::new(), Vec::new());
        let mut consumers = Vec::new();
        for (i, ((channel, stream), to)) in channels.into_iter().zip(incoming).enumerate() {
            let acks = Arc::new(Mutex::new(AckTracker::new(cfg.prefetch)));
            let (ack_tx, ack_rx) = mpsc::unbounded_channel();
            ackers.push(tokio::spawn(send_acks(
                channel.clone(),
                ack_rx,
                lost_tx.clone(),
            )));
            forwarders.push(tokio::spawn(forward(
                stream,
                acks.clone(),
                to.clone(),
                Ticket {
                    consumer: i as u32,
                    generation,
                    tag: 0,
                },
                lost_tx.clone(),
            )));
            consumers.push(ConsumerLink {
                channel,
                acks,
                ack_tx,
            });
        }
        Ok(Session {
            generation,
            publish_conn,
            publish_events,
            consume_conn,
            publisher,
            consumers,
            lost,
            _lost_tx: lost_tx,
            forwarders,
            ackers,
        })
    }

    /// Serves the workers' commands until the session fails or every handle
    /// is gone; then closes the connections.
    pub(super) async fn serve(
        self,
        cfg: &ServiceConfig,
        rx: &flume::Receiver<Command>,
        shared: &Shared,
    ) -> End {
        let Session {
            generation,
            publish_conn,
            mut publish_events,
            mut consume_conn,
            publisher,
            consumers,
            mut lost,
            _lost_tx,
            forwarders,
            ackers,
        } = self;
        let mut idle = Some(publisher);
        let mut round: Option<Round> = None;
        let mut items: Vec<Outgoing> = Vec::new();
        let mut jobs: Vec<Job> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut closing = None;
        let end = loop {
            if closing.is_some() && round.is_none() && jobs.is_empty() {
                break End::Closed(closing.take());
            }
            if !jobs.is_empty()
                && let Some(p) = idle.take()
            {
                let (items, jobs) = (std::mem::take(&mut items), std::mem::take(&mut jobs));
                let timeout = cfg.confirm_timeout;
                round = Some(Box::pin(async move {
                    let mut p = p;
                    let started = std::time::Instant::now();
                    let results = p.publish(&items, timeout).await;
                    verdant_metrics::ops::broker_round(
                        items.len(),
                        started.elapsed().as_secs_f64(),
                    );
                    (p, jobs, results)
                }));
            }
            let in_flight = async {
                match &mut round {
                    Some(r) => r.await,
                    None => std::future::pending().await,
                }
            };
            let consume_events = async {
                match &mut consume_conn {
                    Some((_, events)) => events.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv_async(), if items.len() < cfg.round_max => match cmd {
                    Ok(Command::Close { reply }) => closing = Some(reply),
                    Ok(cmd) => take(cmd, generation, &consumers, shared, &mut items, &mut jobs),
                    Err(_) => break End::Closed(None),
                },
                (p, done, results) = in_flight => {
                    round = None;
                    // A failed channel cannot be trusted; a returned
                    // message means a queue of the topology is gone, and
                    // reconnecting declares it again.
                    let broken = results.iter().find_map(|r| match r {
                        Err(e) if e.is_channel_failure() || matches!(e, PublishError::Returned { .. }) => {
                            Some(e.clone())
                        }
                        _ => None,
                    });
                    // The broker stopped reading from the connection (a
                    // memory or disk alarm) in the middle of the round. A
                    // new connection would be blocked just the same at its
                    // first publish: keep this one, give up the channel
                    // (its confirms can no longer be told apart), and open
                    // another once unblocked.
                    let blocked = shared.blocked.load(Ordering::Acquire)
                        && broken.as_ref().is_some_and(PublishError::is_channel_failure);
                    let continues = broken.is_none() || blocked;
                    complete(done, results, &consumers, continues);
                    match broken {
                        None => idle = Some(p),
                        Some(_) if blocked => {
                            drop(p);
                            // What gathered meanwhile would wait for the
                            // alarm to end: refuse it now.
                            items.clear();
                            for job in std::mem::take(&mut jobs) {
                                fail(job, true);
                            }
                        }
                        Some(e) => break End::Lost(format!("publishing failed: {e}")),
                    }
                }
                event = publish_events.next() => match event {
                    Some(Event::ConnectionBlocked(reason)) => {
                        eprintln!("verdant: the broker blocked publishing ({reason}); new messages get 451");
                        shared.set_blocked(true);
                    }
                    Some(Event::ConnectionUnblocked) => {
                        eprintln!("verdant: the broker unblocked publishing");
                        if idle.is_none() && round.is_none() {
                            let fresh = tokio::time::timeout(cfg.confirm_timeout, Publisher::new(&publish_conn)).await;
                            match fresh {
                                Ok(Ok(p)) => idle = Some(p),
                                _ => break End::Lost("cannot open a publishing channel".into()),
                            }
                        }
                        shared.set_blocked(false);
                    }
                    Some(Event::Error(e)) => break End::Lost(e.to_string()),
                    Some(_) => {}
                    None => break End::Lost("connection events ended".into()),
                },
                event = consume_events => match event {
                    Some(Event::Error(e)) => break End::Lost(e.to_string()),
                    Some(_) => {}
                    None => break End::Lost("connection events ended".into()),
                },
                reason = lost.recv() => {
                    break End::Lost(reason.unwrap_or_else(|| "consumers stopped".into()));
                }
                _ = tick.tick() => {
                    let consuming = consume_conn.as_ref().is_none_or(|(b, _)| b.conn.status().connected());
                    if !publish_conn.conn.status().connected() || !consuming {
                        break End::Lost("connection closed".into());
                    }
                    if idle.as_ref().is_some_and(|p| !p.connected())
                        || consumers.iter().any(|c| !c.channel.status().connected())
                    {
                        break End::Lost("a channel was closed by the broker".into());
                    }
                }
            }
        };
        // Whatever was waiting for this session is answered: not published.
        shared.set_generation(0);
        for job in jobs {
            fail(job, false);
        }
        drop(round);
        for task in forwarders {
            task.abort();
        }
        // The acks already computed still go out (the outcomes they stand
        // for are durable), unless the connection is gone: each sender ends
        // once its queue is empty and its channel dropped.
        drop(consumers);
        let flushed = futures_util::future::join_all(ackers);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, flushed).await;
        close(&publish_conn).await;
        if let Some((b, _)) = &consume_conn {
            close(b).await;
        }
        if let End::Closed(Some(reply)) = &end {
            let _ = reply.send(());
        }
        end
    }
}

/// Opens the publisher and the consumer channels.
async fn setup(
    cfg: &ServiceConfig,
    publish_conn: &Broker,
    consume_conn: Option<&Broker>,
    consumers: usize,
) -> Result<(Publisher, Vec<(Channel, lapin::Consumer)>), crate::Error> {
    cfg.topology.declare(publish_conn).await?;
    let publisher = Publisher::new(publish_conn).await?;
    let mut channels = Vec::new();
    if let Some(conn) = consume_conn {
        for i in 0..consumers {
            let channel = conn.channel().await?;
            channel
                .basic_qos(cfg.prefetch, BasicQosOptions::default())
                .await?;
            let tag = format!("verdant-{}-{i}", std::process::id());
            let stream = channel
                .basic_consume(
                    cfg.topology.delivery_queue().into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            channels.push((channel, stream));
        }
    }
    Ok((publisher, channels))
}

/// Takes one command into the next round (or answers it at once).
fn take(
    cmd: Command,
    generation: u64,
    consumers: &[ConsumerLink],
    shared: &Shared,
    items: &mut Vec<Outgoing>,
    jobs: &mut Vec<Job>,
) {
    match cmd {
        Command::Close { .. } => unreachable!("`serve` handles Close itself"),
        Command::Publish { items: new, reply } => {
            if shared.blocked.load(Ordering::Acquire) {
                fail(
                    Job::Publish {
                        n: new.len(),
                        reply,
                    },
                    true,
                );
                return;
            }
            jobs.push(Job::Publish {
                n: new.len(),
                reply,
            });
            items.extend(new);
        }
        Command::Ack { ticket } => {
            // Delivered: nothing to make durable first. A ticket of an
            // earlier connection is ignored (the broker requeued it).
            if let Some(link) = link(consumers, generation, ticket) {
                link.settled(ticket.tag);
            }
        }
        Command::Settle {
            ticket,
            publish,
            reply,
        } => {
            if link(consumers, generation, ticket).is_none() {
                let _ = reply.send(Err(SettleError::Released));
                return;
            }
            if shared.blocked.load(Ordering::Acquire) {
                // Tried again later by the engine, not held here.
                let _ = reply.send(Err(SettleError::Publish(super::unavailable())));
                return;
            }
            jobs.push(Job::Settle {
                ticket,
                n: publish.len(),
                reply,
            });
            items.extend(publish);
        }
    }
}

/// The consumer a ticket of this session belongs to.
fn link(consumers: &[ConsumerLink], generation: u64, ticket: Ticket) -> Option<&ConsumerLink> {
    consumers
        .get(ticket.consumer as usize)
        .filter(|_| ticket.generation == generation)
}

/// Answers every job of a finished round with its part of the results; a
/// settlement whose replacements are all stored is acknowledged.
/// `continues`: whether the session goes on after this round (if not, the
/// broker takes back every delivery not acknowledged).
fn complete(
    jobs: Vec<Job>,
    results: Vec<Result<(), PublishError>>,
    consumers: &[ConsumerLink],
    continues: bool,
) {
    let mut results = results.into_iter();
    for job in jobs {
        match job {
            Job::Publish { n, reply } => {
                let _ = reply.send(results.by_ref().take(n).collect());
            }
            Job::Settle { ticket, n, reply } => {
                let error = results.by_ref().take(n).find_map(Result::err);
                let answer = match error {
                    None => {
                        consumers[ticket.consumer as usize].settled(ticket.tag);
                        Ok(())
                    }
                    // Unacknowledged on a live connection: settle it again.
                    Some(e) if continues => Err(SettleError::Publish(e)),
                    // The connection goes down with this round: the broker
                    // takes the delivery back.
                    Some(_) => Err(SettleError::Released),
                };
                let _ = reply.send(answer);
            }
        }
    }
}

/// Answers a job that was never published; `continues` as for
/// [`complete`].
fn fail(job: Job, continues: bool) {
    match job {
        Job::Publish { n, reply } => {
            let _ = reply.send(vec![Err(super::unavailable()); n]);
        }
        Job::Settle { reply, .. } if continues => {
            let _ = reply.send(Err(SettleError::Publish(super::unavailable())));
        }
        Job::Settle { reply, .. } => {
            let _ = reply.send(Err(SettleError::Released));
        }
    }
}

/// Sends one consumer channel's acks, in order.
async fn send_acks(
    channel: Channel,
    mut acks: mpsc::UnboundedReceiver<Ack>,
    lost: mpsc::UnboundedSender<String>,
) {
    let mut queued = Vec::new();
    // Whatever piled up while the last acks were being written goes out as
    // the fewest acks that cover it.
    while acks.recv_many(&mut queued, 4096).await > 0 {
        for ack in coalesce(&queued) {
            let opts = BasicAckOptions {
                multiple: ack.multiple,
            };
            if let Err(e) = channel.basic_ack(ack.tag, opts).await {
                // The broker requeues what was not acknowledged.
                let _ = lost.send(format!("acknowledging failed: {e}"));
                return;
            }
        }
        queued.clear();
    }
}

/// Passes one consumer's deliveries to its worker.
async fn forward(
    mut stream: lapin::Consumer,
    acks: Arc<Mutex<AckTracker>>,
    to: flume::Sender<Incoming>,
    ticket: Ticket,
    lost: mpsc::UnboundedSender<String>,
) {
    loop {
        let d = match stream.next().await {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                let _ = lost.send(format!("consuming failed: {e}"));
                return;
            }
            None => {
                // basic.cancel from the broker (queue deleted, node down).
                let _ = lost.send("the broker cancelled a consumer".into());
                return;
            }
        };
        acks.lock().expect("ack tracker").delivered(d.delivery_tag);
        let item = Incoming {
            ticket: Ticket {
                tag: d.delivery_tag,
                ..ticket
            },
            redelivered: d.redelivered,
            attempt: attempt_of(&d.properties),
            data: d.data,
        };
        if to.send_async(item).await.is_err() {
            // The worker is gone: the process is stopping.
            return;
        }
    }
}
