//! Kafka through librdkafka, for the CLI and the standalone drivers: the one client factory
//! (`client.rs`: [`consumer`], [`producer`], [`admin_client`]), the error mapping every call
//! shares (`errors.rs`), the admin calls (`admin.rs`) and the cluster port over them
//! ([`RdKafkaCluster`]).
//!
//! Every failure becomes [`crate::Error::Kafka`] with a message naming the bootstrap servers,
//! and connection problems are marked retriable. On the Connect path the same port is served
//! by Kafka's Java clients (crates/kbackup-jni/src/java_cluster.rs); nothing here runs there.

mod admin;
mod client;
mod cluster;
mod errors;
mod fetch_queue;

pub use admin::{
    check_topic_authorized, create_topic, describe_topic, end_offsets, list_topics, log_end,
    partition_watermarks, CONNECT_TIMEOUT,
};
pub use client::{admin_client, client_config, client_log, consumer, producer, QuietContext};
pub use cluster::RdKafkaCluster;
pub use errors::{acl_error, explain_auth_failure, is_authorization, kafka_error};
pub use fetch_queue::{FetchQueue, Msg};

use std::collections::BTreeMap;

/// What the backup records about a topic so a restore can re-create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Partition count.
    pub partitions: i32,
    /// Topic configs not at their default (set on the topic itself).
    pub configs: BTreeMap<String, String>,
}
