//! What Kafka holds, read back by consuming the topics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use eventstore::kafka::topics::{topic_for, AGGREGATES};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// What the topics of one prefix hold, read by consuming every partition
/// from the beginning (no consumer group): how often each event id was
/// published.
pub struct KafkaLog {
    /// One consumer per topic (an end-of-partition event names only the
    /// partition).
    consumers: Vec<(String, BaseConsumer)>,
    /// Messages per event id (the `event_id` header).
    pub copies: HashMap<String, u32>,
    /// Messages per topic.
    pub per_topic: BTreeMap<String, usize>,
    /// Partitions per topic, from the broker's metadata.
    pub partitions: BTreeMap<String, usize>,
    /// Per partition: messages read and the next offset after the last one.
    pub read: BTreeMap<(String, i32), (usize, i64)>,
    /// Partitions whose end the consumer reached (no message since).
    at_end: HashSet<(String, i32)>,
}

impl KafkaLog {
    /// A reader of the topics of `prefix` on `brokers`. The topics must
    /// exist (the relay creates them at start).
    pub fn open(brokers: &str, prefix: &str) -> KafkaLog {
        let mut consumers = Vec::new();
        let mut partitions = BTreeMap::new();
        for aggregate in AGGREGATES {
            let topic = topic_for(prefix, aggregate);
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", format!("{prefix}.test-reader"))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("allow.auto.create.topics", "false")
                .set("fetch.wait.max.ms", "10")
                .create()
                .unwrap();
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .unwrap();
            let count = metadata.topics()[0].partitions().len();
            assert!(count > 0, "topic {topic} does not exist");
            let mut list = TopicPartitionList::new();
            for partition in 0..count {
                list.add_partition_offset(&topic, partition as i32, Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&list).unwrap();
            partitions.insert(topic.clone(), count);
            consumers.push((topic, consumer));
        }
        KafkaLog {
            consumers,
            copies: HashMap::new(),
            per_topic: BTreeMap::new(),
            partitions,
            read: BTreeMap::new(),
            at_end: HashSet::new(),
        }
    }

    /// Reads what arrives within `wait`; returns how many messages.
    pub fn poll(&mut self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut read = 0;
        while Instant::now() < deadline {
            for (topic, consumer) in &self.consumers {
                let Some(message) = consumer.poll(Duration::from_millis(10)) else {
                    continue;
                };
                let message = match message {
                    Ok(message) => message,
                    Err(KafkaError::PartitionEOF(partition)) => {
                        self.at_end.insert((topic.clone(), partition));
                        continue;
                    }
                    Err(error) => panic!("reading {topic}: {error}"),
                };
                let place = (topic.clone(), message.partition());
                self.at_end.remove(&place);
                let entry = self.read.entry(place).or_default();
                entry.0 += 1;
                entry.1 = message.offset() + 1;
                let event_id = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "event_id"))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .expect("a message without an event_id header");
                *self.copies.entry(event_id).or_default() += 1;
                *self.per_topic.entry(topic.clone()).or_default() += 1;
                read += 1;
            }
        }
        read
    }

    /// Messages read so far.
    pub fn messages(&self) -> usize {
        self.copies.values().map(|n| *n as usize).sum()
    }

    /// Reads until every id of `expected` was seen (at most `limit`);
    /// panics naming how many are missing.
    pub fn read_until_all(&mut self, expected: &HashSet<String>, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let missing = expected
                .iter()
                .filter(|id| !self.copies.contains_key(*id))
                .count();
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} stored events never reached Kafka ({} messages read)",
                expected.len(),
                self.messages()
            );
            self.poll(Duration::from_millis(100));
        }
    }

    /// Reads until the consumer reached the end of every partition (the
    /// end the broker's fetch answers name), so that a duplicate already
    /// on Kafka is counted; at most `limit`.
    pub fn read_to_end(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let all = self.partitions.values().sum::<usize>();
        loop {
            self.poll(Duration::from_millis(100));
            let ended = self
                .partitions
                .iter()
                .flat_map(|(topic, n)| (0..*n as i32).map(move |p| (topic.clone(), p)))
                .filter(|place| self.at_end.contains(place))
                .count();
            if ended == all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Kafka could not be read to its end"
            );
        }
    }

    /// The partitions whose high watermark, as the broker reports it now
    /// (ListOffsets), is below the offset after the last message read
    /// from them: (topic, partition, reported high, next offset read).
    pub fn watermarks_behind_what_was_read(&self) -> Vec<(String, i32, i64, i64)> {
        let mut behind = Vec::new();
        for ((topic, partition), (_, next)) in &self.read {
            let (_, consumer) = self.consumers.iter().find(|(t, _)| t == topic).unwrap();
            let (_, high) = consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .unwrap();
            if high < *next {
                behind.push((topic.clone(), *partition, high, *next));
            }
        }
        behind
    }
}
