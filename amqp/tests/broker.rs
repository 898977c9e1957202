//! Tests against the real RabbitMQ broker (`VERDANT_AMQP_URL`, default
//! amqp://guest:guest@127.0.0.1:5672). Each test declares its own uniquely
//! prefixed topology and deletes it at the end, also when it fails.
//! Skipped only with `VERDANT_SKIP_BROKER_TESTS=1`, loudly; CI never sets it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use verdant_amqp::{Broker, Consumer, Outgoing, PublishError, Publisher, QueueKind, Topology};

/// How long a test publish may wait for its confirms.
const CONFIRM: Duration = Duration::from_secs(10);
use verdant_queue::{Envelope, QueueId, Record, codec};
use verdant_testkit::broker::{skip, url};

fn topology(test: &str, tiers: Vec<Duration>) -> Topology {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Topology {
        prefix: format!("verdant-test.{test}.{}.{nanos}", std::process::id()),
        tiers,
        kind: QueueKind::Classic,
    }
}

/// Deletes the topology's queues when dropped, whether the test passed or
/// panicked. Runs on a thread of its own with its own runtime (Drop cannot
/// await, and the test's runtime may be the current thread's).
struct Cleanup(Topology);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let topology = self.0.clone();
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let broker = Broker::connect(&url()).await?;
                topology.delete(&broker).await?;
                broker.close().await
            })
        })
        .join();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup of {}: {e}", self.0.prefix),
            Err(_) => eprintln!("cleanup of {} panicked", self.0.prefix),
        }
    }
}

fn message(i: usize) -> (QueueId, Envelope, Vec<u8>) {
    let id = QueueId {
        micros: 1_700_000_000_000_000 + i as u64,
        worker: (i % 4) as u16,
    };
    let env = Envelope {
        sender: format!("sender{i}@example.com"),
        recipients: vec![format!("rcpt{i}@example.net"), "other@example.org".into()],
        ..Default::default()
    };
    let body = format!("Subject: message {i}\r\n\r\n{}\r\n", "x".repeat(i * 61)).into_bytes();
    (id, env, body)
}

fn encode(i: usize) -> Vec<u8> {
    let (id, env, body) = message(i);
    let mut buf = Vec::new();
    codec::encode_message(&mut buf, id, &env, &body);
    buf
}

async fn next_within(consumer: &mut Consumer, limit: Duration) -> verdant_amqp::Delivery {
    tokio::time::timeout(limit, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("consumer still open")
        .expect("delivery ok")
}

#[tokio::test]
async fn topology_declares_twice_idempotently() {
    if skip("topology_declares_twice_idempotently") {
        return;
    }
    let topo = topology(
        "declare",
        vec![Duration::from_secs(1), Duration::from_secs(300)],
    );
    let _cleanup = Cleanup(topo.clone());
    let broker = Broker::connect(&url()).await.unwrap();
    topo.declare(&broker).await.unwrap();
    // A message queued between the two declarations survives the second.
    let mut publisher = Publisher::new(&broker).await.unwrap();
    let r = publisher
        .publish(&[Outgoing::new(topo.delivery_queue(), encode(1))], CONFIRM)
        .await;
    assert_eq!(r, vec![Ok(())]);
    topo.declare(&broker).await.unwrap();
    assert!(topo.delivery_queue().contains(".v2."));
    assert_eq!(topo.queue_names().len(), 4);
    let mut consumer = Consumer::new(&broker, &topo, &topo.delivery_queue(), 8)
        .await
        .unwrap();
    let d = next_within(&mut consumer, Duration::from_secs(10)).await;
    assert_eq!(d.data(), &encode(1)[..]);
    consumer.ack_up_to(d.tag()).await.unwrap();
    broker.close().await.unwrap();
}

#[tokio::test]
async fn batch_of_64_confirmed_and_consumed_intact() {
    if skip("batch_of_64_confirmed_and_consumed_intact") {
        return;
    }
    let topo = topology("batch", vec![]);
    let _cleanup = Cleanup(topo.clone());
    let broker = Broker::connect(&url()).await.unwrap();
    topo.declare(&broker).await.unwrap();
    let mut publisher = Publisher::new(&broker).await.unwrap();
    let batch: Vec<Outgoing> = (0..64)
        .map(|i| Outgoing::new(topo.delivery_queue(), encode(i)))
        .collect();
    let results = publisher.publish(&batch, CONFIRM).await;
    assert_eq!(results.len(), 64);
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let mut consumer = Consumer::new(&broker, &topo, &topo.delivery_queue(), 16)
        .await
        .unwrap();
    for i in 0..64 {
        let d = next_within(&mut consumer, Duration::from_secs(10)).await;
        let (id, env, body) = message(i);
        match d.decode().unwrap() {
            Record::Message {
                id: got_id,
                envelope,
                body: got_body,
            } => {
                assert_eq!(got_id, id);
                assert_eq!(envelope, env);
                assert_eq!(got_body, &body[..]);
            }
            other => panic!("not a message: {other:?}"),
        }
        // Cumulative acks, as the engine does once outcomes are durable.
        if i % 8 == 7 {
            consumer.ack_up_to(d.tag()).await.unwrap();
        }
    }
    // Everything was acked: nothing is left or redelivered.
    let nothing = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(nothing.is_err(), "unexpected delivery");
    broker.close().await.unwrap();
}

#[tokio::test]
async fn unroutable_message_is_an_error() {
    if skip("unroutable_message_is_an_error") {
        return;
    }
    let topo = topology("unroutable", vec![]);
    let _cleanup = Cleanup(topo.clone());
    let broker = Broker::connect(&url()).await.unwrap();
    topo.declare(&broker).await.unwrap();
    let mut publisher = Publisher::new(&broker).await.unwrap();
    let nowhere = format!("{}.no-such-queue", topo.prefix);
    // Two unroutable messages among 20 in one round: each result names the
    // right one (lapin hands returns to whichever confirm completes next;
    // the publisher matches them back by message id).
    let unroutable = [7, 13];
    let round: Vec<Outgoing> = (0..20)
        .map(|i| {
            let queue = if unroutable.contains(&i) {
                nowhere.clone()
            } else {
                topo.delivery_queue()
            };
            Outgoing::new(queue, encode(i))
        })
        .collect();
    let results = publisher.publish(&round, CONFIRM).await;
    for (i, r) in results.iter().enumerate() {
        if unroutable.contains(&i) {
            match r {
                Err(PublishError::Returned { code, .. }) => assert_eq!(*code, 312),
                other => panic!("{i}: expected a returned message, got {other:?}"),
            }
        } else {
            assert_eq!(*r, Ok(()), "{i}");
        }
    }
    // The 18 others are stored, in order.
    let mut consumer = Consumer::new(&broker, &topo, &topo.delivery_queue(), 32)
        .await
        .unwrap();
    for i in (0..20).filter(|i| !unroutable.contains(i)) {
        let d = next_within(&mut consumer, Duration::from_secs(10)).await;
        assert_eq!(d.data(), &encode(i)[..], "{i}");
        consumer.ack_up_to(d.tag()).await.unwrap();
    }
    broker.close().await.unwrap();
}

#[tokio::test]
async fn delay_tier_comes_back_after_its_ttl() {
    if skip("delay_tier_comes_back_after_its_ttl") {
        return;
    }
    let topo = topology("delay", vec![Duration::from_secs(1)]);
    let _cleanup = Cleanup(topo.clone());
    let broker = Broker::connect(&url()).await.unwrap();
    topo.declare(&broker).await.unwrap();
    let mut consumer = Consumer::new(&broker, &topo, &topo.delivery_queue(), 8)
        .await
        .unwrap();
    let mut publisher = Publisher::new(&broker).await.unwrap();
    let sent = Instant::now();
    let results = publisher
        .publish(&[Outgoing::new(topo.delay_queue(0), encode(7))], CONFIRM)
        .await;
    assert_eq!(results, vec![Ok(())]);
    let d = next_within(&mut consumer, Duration::from_secs(10)).await;
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "came back after {waited:?}"
    );
    assert_eq!(d.data(), &encode(7)[..]);
    consumer.ack_up_to(d.tag()).await.unwrap();
    broker.close().await.unwrap();
}

#[tokio::test]
async fn dead_letter_lands_on_the_dlq_with_its_reason() {
    if skip("dead_letter_lands_on_the_dlq_with_its_reason") {
        return;
    }
    let topo = topology("dead", vec![]);
    let _cleanup = Cleanup(topo.clone());
    let broker = Broker::connect(&url()).await.unwrap();
    topo.declare(&broker).await.unwrap();
    let mut publisher = Publisher::new(&broker).await.unwrap();
    let garbage = b"\xffnot a verdant record".to_vec();
    let results = publisher
        .publish(
            &[
                Outgoing::new(topo.delivery_queue(), garbage.clone()),
                Outgoing::new(topo.delivery_queue(), encode(2)),
            ],
            CONFIRM,
        )
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let mut consumer = Consumer::new(&broker, &topo, &topo.delivery_queue(), 8)
        .await
        .unwrap();
    let bad = next_within(&mut consumer, Duration::from_secs(10)).await;
    let err = bad.decode().expect_err("garbage must not decode");
    let reason = format!("undecodable: {err}");
    consumer.dead_letter(&bad, &reason).await.unwrap();
    let good = next_within(&mut consumer, Duration::from_secs(10)).await;
    assert!(good.decode().is_ok());
    // The cumulative ack skips the dead-lettered (already acked) tag.
    consumer.ack_up_to(good.tag()).await.unwrap();

    let mut dlq = Consumer::new(&broker, &topo, &topo.dead_letter_queue(), 8)
        .await
        .unwrap();
    let dead = next_within(&mut dlq, Duration::from_secs(10)).await;
    assert_eq!(dead.data(), &garbage[..]);
    assert_eq!(dead.dead_letter_reason(), Some(reason.as_str()));
    dlq.ack_up_to(dead.tag()).await.unwrap();
    broker.close().await.unwrap();
}

#[tokio::test]
async fn quorum_topology_declares_and_delays() {
    if skip("quorum_topology_declares_and_delays") {
        return;
    }
    let mut topo = topology("quorum", vec![Duration::from_millis(200)]);
    topo.kind = QueueKind::Quorum;
    let _cleanup = Cleanup(topo.clone());
    let broker = Broker::connect(&url()).await.unwrap();
    topo.declare(&broker).await.unwrap();
    topo.declare(&broker).await.unwrap();
    let mut consumer = Consumer::new(&broker, &topo, &topo.delivery_queue(), 8)
        .await
        .unwrap();
    let mut publisher = Publisher::new(&broker).await.unwrap();
    let results = publisher
        .publish(&[Outgoing::new(topo.delay_queue(0), encode(9))], CONFIRM)
        .await;
    assert_eq!(results, vec![Ok(())]);
    let d = next_within(&mut consumer, Duration::from_secs(10)).await;
    assert_eq!(d.data(), &encode(9)[..]);
    consumer.ack_up_to(d.tag()).await.unwrap();
    broker.close().await.unwrap();
}

/// A queue at its length limit with `reject-publish` makes the broker nack:
/// each confirm is checked, so the nack is an error for that message alone
/// (the receiver answers 451 for it), never a silent success.
#[tokio::test]
async fn a_nacked_message_is_an_error() {
    if skip("a_nacked_message_is_an_error") {
        return;
    }
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let name = topology("nack", vec![]).prefix + ".full";
    let conn = lapin::Connection::connect(&url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    // Exclusive: gone with this connection even if the test panics.
    let opts = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(name.as_str().into(), opts, args)
        .await
        .unwrap();
    let broker = Broker::connect(&url()).await.unwrap();
    let mut publisher = Publisher::new(&broker).await.unwrap();
    let results = publisher
        .publish(
            &[
                Outgoing::new(name.clone(), encode(1)),
                Outgoing::new(name.clone(), encode(2)),
                Outgoing::new(name.clone(), encode(3)),
            ],
            CONFIRM,
        )
        .await;
    ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(results[0], Ok(()), "{results:?}");
    assert_eq!(results[1], Err(PublishError::Nacked), "{results:?}");
    assert_eq!(results[2], Err(PublishError::Nacked), "{results:?}");
    broker.close().await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
}
