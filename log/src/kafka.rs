//! The event log on Apache Kafka (or any broker speaking its protocol).
//!
//! A runstream topic (`events`, `registry`) is the Kafka topic `PREFIX.TOPIC`, created on first
//! open with the configured partition count; a topic that exists keeps its own count. Records go
//! to the partition [`partition_for`] their key gives, the same as on SQLite, so a run's events
//! keep their order. The producer is idempotent with `acks=all`: an append returns only once every
//! in-sync replica has the records, and a retry inside the producer never writes one twice.
//! Positions are (partition, offset), Kafka's own.
//!
//! Reads go through one consumer per partition, assigned (no group, no committed offsets: the
//! views keep their positions with their rows) and moved with `seek` when a read does not start
//! where the last one ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::{AppendRecord, EventLog, LogError, LogRecord, Membership, Position, partition_for};

/// How long a metadata or watermark request may take before the broker counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest record accepted; event batches are bounded well below it by ingest.
const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Where the log lives, parsed from `kafka://HOST:PORT[,HOST:PORT...][/PREFIX][?replication=N]`.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaUrl {
    pub brokers: String,
    pub prefix: String,
    pub replication: i32,
}

impl KafkaUrl {
    pub fn parse(url: &str) -> Result<Self, LogError> {
        let bad = |why: &str| LogError::Invalid(format!("kafka url {url:?}: {why}"));
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| bad("must start with kafka://"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (brokers, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
            return Err(bad("name the brokers as HOST:PORT, separated by commas"));
        }
        let prefix = if prefix.is_empty() { "runstream" } else { prefix };
        if !prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(bad("the topic prefix may hold letters, digits, '.', '_' and '-'"));
        }
        let mut replication = 1;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("replication", n)) => {
                    replication = n
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("replication must be a whole number of at least 1"))?;
                }
                _ => return Err(bad(&format!("unknown setting {pair:?} (known: replication)"))),
            }
        }
        Ok(KafkaUrl {
            brokers: brokers.to_string(),
            prefix: prefix.to_string(),
            replication,
        })
    }
}

/// The clients' context: librdkafka's reports go to `tracing` at a level that fits them. Its
/// default logs every error at ERROR, including a partition's end (an expected event for
/// readers) and a broker being down, which ingest answers with 503 and projectors ride out.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::warn!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Warning | RDKafkaLogLevel::Notice => {
                tracing::info!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(facility = fac, "librdkafka: {log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PartitionEOF) => tracing::debug!("kafka: {reason}"),
            Some(
                RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::RequestTimedOut,
            ) => tracing::warn!(error = %error, "kafka: {reason}"),
            _ => tracing::error!(error = %error, "kafka: {reason}"),
        }
    }
}

impl ConsumerContext for Quiet {}

fn too_large(bytes: usize) -> LogError {
    LogError::TooLarge(format!(
        "a run's events in this request take {bytes} bytes, past the log's limit of {MAX_RECORD_BYTES} bytes per run and request; send smaller batches"
    ))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("kafka {what}: {e}"))
}

/// An idempotent producer that is acknowledged only once every in-sync replica has a record.
fn new_producer(config: &ClientConfig) -> Result<FutureProducer<Quiet>, LogError> {
    config
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        // One record per record batch. A record is already a whole request's events for a
        // run, so little is lost, and some Kafka-protocol brokers (tansu 0.6) report the high
        // watermark of a multi-record batch at its last record rather than past it, which
        // would hide a partition's last record from readers until the next append.
        .set("batch.num.messages", "1")
        .set("message.max.bytes", MAX_RECORD_BYTES.to_string())
        .set("message.timeout.ms", "30000")
        .create_with_context(Quiet)
        .map_err(|e| unavailable("producer", e))
}

/// The producer appends go through, replaced after a failed append. An idempotent producer
/// whose records timed out (a broker away for longer than `message.timeout.ms`) must bump its
/// epoch to go on, and a broker that cannot (tansu 0.6) fails every later record of that
/// producer; a fresh producer gets a fresh id. Replacing it is safe: its outstanding records
/// are purged first, so they are all reported failed (503, and the client sends them again with
/// the same event ids, which the projector skips if the first copy did reach the log).
struct Producers {
    current: Mutex<Arc<FutureProducer<Quiet>>>,
    /// An append failed since the producer was made; the next one replaces it.
    failed: std::sync::atomic::AtomicBool,
    replaced_at: Mutex<Instant>,
}

/// Producers are replaced at most this often, so a broker that is down is not hammered.
const REPLACE_EVERY: Duration = Duration::from_secs(2);

impl Producers {
    fn producer(&self, config: &ClientConfig) -> Arc<FutureProducer<Quiet>> {
        use std::sync::atomic::Ordering;
        if self.failed.load(Ordering::Relaxed) {
            let mut at = self.replaced_at.lock().expect("replaced_at");
            if at.elapsed() >= REPLACE_EVERY && self.failed.swap(false, Ordering::Relaxed) {
                match new_producer(config) {
                    Ok(fresh) => {
                        let old = std::mem::replace(&mut *self.current.lock().expect("producer"), Arc::new(fresh));
                        *at = Instant::now();
                        tracing::warn!("kafka: replacing the producer after a failed append");
                        // Purging and closing block: off the async threads.
                        tokio::task::spawn_blocking(move || {
                            old.purge(PurgeConfig::default().queue().inflight());
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka: could not make a new producer");
                        self.failed.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        self.current.lock().expect("producer").clone()
    }
}

/// The offset the next record appended to `partition` will get.
fn high_watermark(meta: &BaseConsumer<Quiet>, topic: &str, partition: u32) -> Result<u64, LogError> {
    meta.fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT)
        .map(|(_, high)| high.max(0) as u64)
        .map_err(|e| unavailable("watermarks", e))
}

struct Reader {
    consumer: BaseConsumer<Quiet>,
    /// The offset the consumer's next message will have.
    next: u64,
    /// When it last delivered.
    used: Instant,
}

/// A reader unused this long is closed: its partition went to another projector in a
/// rebalance, or has had nothing new to read. A consumer holds connections and a fetch thread.
const READER_IDLE: Duration = Duration::from_secs(120);

pub struct KafkaLog {
    topic: String,
    partitions: u32,
    producers: Producers,
    config: ClientConfig,
    /// For watermarks and metadata.
    meta: Arc<BaseConsumer<Quiet>>,
    readers: Arc<Mutex<HashMap<u32, Reader>>>,
    /// How long a reader may sit unused ([`READER_IDLE`]).
    reader_idle: Duration,
}

impl KafkaLog {
    /// Opens (creating if missing) the topic `PREFIX.TOPIC` with `partitions` partitions.
    pub async fn open(url: &str, topic: &str, partitions: u32) -> Result<Self, LogError> {
        let u = KafkaUrl::parse(url)?;
        if topic.is_empty() || !topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(LogError::Invalid(format!("topic name {topic:?}")));
        }
        let topic = format!("{}.{topic}", u.prefix);
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &u.brokers)
            .set("socket.timeout.ms", "10000");
        let producer = new_producer(&config)?;
        let admin: AdminClient<Quiet> = config
            .create_with_context(Quiet)
            .map_err(|e| unavailable("admin client", e))?;
        let new = NewTopic::new(&topic, partitions.max(1) as i32, TopicReplication::Fixed(u.replication))
            // The log is the system of record: it keeps everything.
            .set("retention.ms", "-1")
            .set("retention.bytes", "-1");
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let created = admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| unavailable("creating the topic", e))?;
        for r in created {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(unavailable(&format!("creating topic {t}"), code)),
            }
        }
        let meta: BaseConsumer<Quiet> = config
            .clone()
            .set("enable.auto.commit", "false")
            .create_with_context(Quiet)
            .map_err(|e| unavailable("consumer", e))?;
        let meta = Arc::new(meta);
        let (m, t) = (meta.clone(), topic.clone());
        let partitions = tokio::task::spawn_blocking(move || -> Result<u32, LogError> {
            // A topic just created may take a moment to show its partitions.
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            loop {
                let md = m
                    .fetch_metadata(Some(&t), REQUEST_TIMEOUT)
                    .map_err(|e| unavailable("metadata", e))?;
                let n = md.topics().first().map_or(0, |t| t.partitions().len());
                if n > 0 {
                    return Ok(n as u32);
                }
                if Instant::now() > deadline {
                    return Err(LogError::Unavailable(format!("kafka topic {t} shows no partitions")));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .map_err(|e| LogError::Storage(e.to_string()))??;
        Ok(KafkaLog {
            topic,
            partitions,
            producers: Producers {
                current: Mutex::new(Arc::new(producer)),
                failed: false.into(),
                replaced_at: Mutex::new(Instant::now()),
            },
            config,
            meta,
            readers: Arc::default(),
            reader_idle: READER_IDLE,
        })
    }

    fn reader(&self, partition: u32, from: u64) -> Result<Reader, LogError> {
        let consumer: BaseConsumer<Quiet> = self
            .config
            .clone()
            // Assigned, not subscribed: the group id joins no group and nothing is committed,
            // but the client wants one.
            .set("group.id", format!("{}.reader", self.topic))
            // An offset out of range is an error, never a silent jump to either end.
            .set("auto.offset.reset", "error")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.message.max.bytes", MAX_RECORD_BYTES.to_string())
            // A broker may hold a fetch for this long when it has less than a full fetch to
            // send (tansu does, whatever fetch.min.bytes says): at the default 500 ms a reader
            // behind by a few megabytes waited half a second per fetch. An idle reader then asks
            // a hundred times a second, and is closed after `reader_idle`.
            .set("fetch.wait.max.ms", "10")
            .create_with_context(Quiet)
            .map_err(|e| unavailable("consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition as i32, Offset::Offset(from as i64))
            .map_err(|e| unavailable("assigning a partition", e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| unavailable("assigning a partition", e))?;
        Ok(Reader {
            consumer,
            next: from,
            used: Instant::now(),
        })
    }
}

#[async_trait::async_trait]
impl EventLog for KafkaLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn append(&self, records: Vec<AppendRecord>) -> Result<Vec<Position>, LogError> {
        // Checked before anything is sent, so an append is refused whole: a record past the
        // limit would fail at the producer however often it is retried.
        if let Some(r) = records
            .iter()
            .find(|r| r.key.len() + r.payload.len() > MAX_RECORD_BYTES)
        {
            return Err(too_large(r.key.len() + r.payload.len()));
        }
        let producer = self.producers.producer(&self.config);
        let sends = records.iter().map(|r| {
            let partition = partition_for(&r.key, self.partitions);
            producer.send(
                FutureRecord::to(&self.topic)
                    .partition(partition as i32)
                    .key(&r.key)
                    .payload(&r.payload),
                REQUEST_TIMEOUT,
            )
        });
        let mut out = Vec::with_capacity(records.len());
        for result in futures::future::join_all(sends).await {
            let d = result.map_err(|(e, _)| match e.rdkafka_error_code() {
                // The broker's own limit may be lower than the producer's.
                Some(RDKafkaErrorCode::MessageSizeTooLarge) => LogError::TooLarge(format!(
                    "the broker refused a record as too large ({e}); send smaller batches"
                )),
                _ => {
                    self.producers.failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    unavailable("append", e)
                }
            })?;
            // A broker may acknowledge a retried send it already had (after a restart, say)
            // without its offset. The record is in the log, but its position is unknown, and a
            // position is what the caller waits on: fail, so the client sends again (its event
            // ids make the second copy harmless).
            if d.offset < 0 {
                return Err(LogError::Unavailable(
                    "kafka acknowledged a resent record without its offset; send again".into(),
                ));
            }
            out.push(Position {
                partition: d.partition as u32,
                offset: d.offset as u64,
            });
        }
        Ok(out)
    }

    async fn read(&self, partition: u32, from: u64, max_records: usize) -> Result<Vec<LogRecord>, LogError> {
        if partition >= self.partitions {
            return Err(LogError::Invalid(format!(
                "partition {partition} of a log of {}",
                self.partitions
            )));
        }
        let (meta, topic) = (self.meta.clone(), self.topic.clone());
        let end = tokio::task::spawn_blocking(move || high_watermark(&meta, &topic, partition))
            .await
            .map_err(|e| LogError::Storage(e.to_string()))??;
        let readers = self.readers.clone();
        let idle: Vec<Reader> = {
            let mut map = readers.lock().expect("readers");
            let old: Vec<u32> = map
                .iter()
                .filter(|(_, r)| r.used.elapsed() > self.reader_idle)
                .map(|(p, _)| *p)
                .collect();
            old.iter().filter_map(|p| map.remove(p)).collect()
        };
        if !idle.is_empty() {
            // Closing a consumer blocks.
            tokio::task::spawn_blocking(move || drop(idle));
        }
        let until = end.min(from.saturating_add(max_records as u64));
        if from >= until {
            return Ok(Vec::new());
        }
        let reader = readers.lock().expect("readers").remove(&partition);
        // A reader elsewhere in the partition is replaced; closing a consumer blocks, so the
        // old one is dropped on the blocking pool below, not here.
        let (reader, stale) = match reader {
            Some(r) if r.next == from => (r, None),
            other => (self.reader(partition, from)?, other),
        };
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            drop(stale);
            let mut reader = reader;
            let mut out = Vec::with_capacity((until - from) as usize);
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            while reader.next < until {
                if Instant::now() > deadline {
                    return Err(LogError::Unavailable(format!(
                        "kafka: {topic}/{partition} did not deliver offset {} within {REQUEST_TIMEOUT:?}",
                        reader.next
                    )));
                }
                match reader.consumer.poll(Duration::from_millis(100)) {
                    None | Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e)) => return Err(unavailable("read", e)),
                    Some(Ok(m)) => {
                        let offset = m.offset() as u64;
                        if offset < reader.next {
                            continue;
                        }
                        if offset > reader.next {
                            return Err(LogError::Storage(format!(
                                "kafka: {topic}/{partition} skipped from offset {} to {offset}",
                                reader.next
                            )));
                        }
                        out.push(LogRecord {
                            position: Position { partition, offset },
                            payload: m.payload().unwrap_or_default().to_vec(),
                        });
                        reader.next = offset + 1;
                    }
                }
            }
            reader.used = Instant::now();
            let displaced = readers.lock().expect("readers").insert(partition, reader);
            drop(displaced);
            Ok(out)
        })
        .await
        .map_err(|e| LogError::Storage(e.to_string()))?
    }

    async fn end_offsets(&self) -> Result<Vec<u64>, LogError> {
        let (meta, topic, n) = (self.meta.clone(), self.topic.clone(), self.partitions);
        tokio::task::spawn_blocking(move || (0..n).map(|p| high_watermark(&meta, &topic, p)).collect())
            .await
            .map_err(|e| LogError::Storage(e.to_string()))?
    }

    async fn wait_for_new(&self, known: &[u64], timeout: Duration) -> Result<(), LogError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.end_offsets().await? != known || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// A Kafka consumer group `PREFIX.GROUP` on the topic: the broker's group coordinator deals
    /// out the partitions and deals them again when a member joins, leaves or stops answering
    /// (`session.timeout.ms`). The group's consumer only keeps the membership alive: its
    /// partitions stay paused, nothing is fetched through it and no offset is committed (the
    /// views hold their positions with their rows).
    async fn join(&self, group: &str, name: Option<&str>) -> Result<Membership, LogError> {
        if group.is_empty() || !group.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(LogError::Invalid(format!("group name {group:?}")));
        }
        let mut config = self.config.clone();
        if let Some(name) = name {
            crate::check_member_name(name)?;
            // Static membership: a member that rejoins under its instance id replaces its
            // earlier self in the group with no rebalance, keeping its partitions.
            config.set("group.instance.id", name);
        }
        let prefix = self.topic.rsplit_once('.').map_or("", |(p, _)| p);
        let consumer: BaseConsumer<Quiet> = config
            .set("group.id", format!("{prefix}.{group}"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // Also the rebalance timeout: how long the coordinator waits for members to rejoin
            // before dealing out the partitions without them (a member that crashed never
            // will). This thread polls every 100 ms, so a live member is never late.
            .set("max.poll.interval.ms", "15000")
            .create_with_context(Quiet)
            .map_err(|e| unavailable("group consumer", e))?;
        consumer
            .subscribe(&[&self.topic])
            .map_err(|e| unavailable("joining the group", e))?;
        let (tx, rx) = tokio::sync::watch::channel(Vec::new());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kafka-group-{group}"))
            .spawn(move || {
                let mut errors = 0u64;
                let mut logged = Instant::now() - Duration::from_secs(60);
                while !thread_stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Polling drives the heartbeats and the rebalances. Errors pile up in the
                    // consumer's queue while the broker is away, one per poll: they are drained
                    // at the pace they come (sleeping on each would leave the rebalance that
                    // follows the broker's return minutes behind them), and logged at most every
                    // 10 s.
                    match consumer.poll(Duration::from_millis(100)) {
                        None | Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            errors += 1;
                            if logged.elapsed() >= Duration::from_secs(10) {
                                tracing::warn!(error = %e, errors, "kafka group consumer");
                                logged = Instant::now();
                                errors = 0;
                            }
                        }
                    }
                    let Ok(assignment) = consumer.assignment() else {
                        continue;
                    };
                    let mut mine: Vec<u32> = assignment.elements().iter().map(|e| e.partition() as u32).collect();
                    mine.sort_unstable();
                    if *tx.borrow() != mine {
                        let _ = consumer.pause(&assignment);
                        tracing::info!(partitions = ?mine, "group assignment");
                        tx.send_replace(mine);
                    }
                }
                // Dropping the consumer closes it, which leaves the group at once.
            })
            .map_err(|e| LogError::Storage(format!("starting the group thread: {e}")))?;
        let session = GroupSession {
            stop,
            thread: Some(thread),
        };
        Ok(Membership::new(rx, Box::new(session)))
    }
}

/// Stops the group thread when the membership is dropped, and waits for it to leave the group
/// (one poll and the consumer's close), so that a process stopping leaves its partitions to the
/// others at once rather than after the session times out.
struct GroupSession {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for GroupSession {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn readers_left_unused_are_closed() {
        let broker = runstream_testkit::Broker::start();
        let mut log = KafkaLog::open(&broker.url("idle"), "events", 2).await.unwrap();
        log.reader_idle = Duration::from_millis(300);
        // A record in each partition, each read once: a reader per partition.
        let key_of = |p: u32| {
            (0..)
                .map(|i| format!("run-{i}"))
                .find(|k| partition_for(k, 2) == p)
                .unwrap()
        };
        let (k0, k1) = (key_of(0), key_of(1));
        let record = |key: &str, payload: &[u8]| AppendRecord {
            key: key.to_string(),
            payload: payload.to_vec(),
        };
        log.append(vec![record(&k0, b"x"), record(&k1, b"x")]).await.unwrap();
        assert_eq!(log.read(0, 0, 10).await.unwrap().len(), 1);
        assert_eq!(log.read(1, 0, 10).await.unwrap().len(), 1);
        let open = |log: &KafkaLog| {
            let mut p: Vec<u32> = log.readers.lock().unwrap().keys().copied().collect();
            p.sort_unstable();
            p
        };
        assert_eq!(open(&log), vec![0, 1]);
        // Partition 0 goes on being read; partition 1 is left alone past the idle time.
        tokio::time::sleep(Duration::from_millis(200)).await;
        log.append(vec![record(&k0, b"y")]).await.unwrap();
        assert_eq!(log.read(0, 1, 10).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(log.read(0, 2, 10).await.unwrap().len(), 0);
        assert_eq!(open(&log), vec![0], "the reader of partition 1 is still open");
        // A read of partition 1 opens a reader again.
        assert_eq!(log.read(1, 0, 10).await.unwrap().len(), 1);
        assert_eq!(open(&log), vec![0, 1]);
    }

    #[test]
    fn urls_name_brokers_prefix_and_replication() {
        assert_eq!(
            KafkaUrl::parse("kafka://a:9092,b:9092/prod?replication=3").unwrap(),
            KafkaUrl {
                brokers: "a:9092,b:9092".into(),
                prefix: "prod".into(),
                replication: 3
            }
        );
        assert_eq!(KafkaUrl::parse("kafka://127.0.0.1:9092").unwrap().prefix, "runstream");
        for bad in [
            "kafka://",
            "kafka://host",
            "kafka://h:1/bad prefix",
            "kafka://h:1?replication=0",
            "kafka://h:1?acks=0",
            "http://h:1",
        ] {
            assert!(KafkaUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
