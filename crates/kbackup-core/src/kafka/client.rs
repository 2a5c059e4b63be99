//! The one place a Kafka client is built: every admin client, consumer and producer of the CLI
//! and the standalone drivers comes from here, so the guards below hold for all of them.
//!
//! - No client ever creates a topic by asking about it (`allow.auto.create.topics=false`).
//! - No consumer commits or stores offsets unless the caller commits explicitly.
//! - librdkafka's own log lines go to the `librdkafka` log target (shown with `-v`), and a
//!   failed call ends in ONE error naming the problem, not a screen of retries; an
//!   authentication failure seen in the background is remembered so the error says so
//!   ([`super::explain_auth_failure`]).

use super::errors::{kafka_error, note_auth_failure};
use crate::error::{Error, Result};
use rdkafka::admin::AdminClient;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, ProducerContext};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// An rdkafka client config holding every `cluster` entry as given (librdkafka names), with
/// librdkafka's log level following ours.
pub fn client_config(cluster: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in cluster {
        c.set(k, v);
    }
    let level = if log::max_level() >= log::LevelFilter::Debug {
        RDKafkaLogLevel::Debug
    } else if log::max_level() >= log::LevelFilter::Info {
        RDKafkaLogLevel::Warning
    } else {
        RDKafkaLogLevel::Emerg
    };
    c.set_log_level(level);
    c
}

/// The settings were refused by librdkafka itself (a misspelt key, a bad value).
fn not_accepted(e: KafkaError) -> Error {
    Error::Config(format!(
        "the Kafka client settings are not accepted: {e}; fix the cluster.* / --config / \
         --config-file entries"
    ))
}

/// Client callbacks that keep librdkafka's transient errors (connection refused, retries) out
/// of the user's way: they surface as ONE error from the call that failed, and with `-v`.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log::info!("Kafka client: {error}: {reason}");
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        ) {
            note_auth_failure(reason);
        }
    }
}

impl ConsumerContext for QuietContext {}

/// librdkafka's log lines, shown with `-v` (warnings and worse) or `-vv` (the rest).
pub fn client_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
        log::info!(target: "librdkafka", "{fac}: {message}");
    } else {
        log::debug!(target: "librdkafka", "{fac}: {message}");
    }
}

/// The admin client (metadata, configs, topic creation) of the cluster `cluster` describes,
/// for `what`: one per distinct settings for the whole process, made on first use.
///
/// Shared because dropping an rdkafka `AdminClient` joins its polling thread, which wakes
/// every 100 ms: a fresh client per call cost 65-160 ms each (connect, metadata, that join),
/// and a CLI backup made three of them one after another before its first fetch (0.35 s of
/// the 0.4 s to its first record). A shared client also keeps its broker connections.
pub fn admin_client(
    cluster: &BTreeMap<String, String>,
    what: &str,
) -> Result<Arc<AdminClient<QuietContext>>> {
    type Admins = Mutex<HashMap<BTreeMap<String, String>, Arc<AdminClient<QuietContext>>>>;
    static ADMINS: OnceLock<Admins> = OnceLock::new();
    if !cluster.contains_key("bootstrap.servers") {
        return Err(Error::Config(format!(
            "{what} needs a Kafka cluster, but no bootstrap.servers is configured; set \
             cluster.bootstrap.servers (connector) or --bootstrap-server (CLI)"
        )));
    }
    let mut admins = ADMINS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(a) = admins.get(cluster) {
        return Ok(Arc::clone(a));
    }
    let mut cfg = client_config(cluster);
    cfg.set("allow.auto.create.topics", "false");
    let admin = Arc::new(
        cfg.create_with_context(QuietContext)
            .map_err(not_accepted)?,
    );
    admins.insert(cluster.clone(), Arc::clone(&admin));
    Ok(admin)
}

/// A consumer for `what` that never subscribes, creates topics or commits on its own; `set`
/// adds the call's own settings (a group id, the isolation level...).
pub fn consumer(
    cluster: &BTreeMap<String, String>,
    what: &str,
    set: &[(&str, &str)],
) -> Result<BaseConsumer<QuietContext>> {
    let mut cfg = client_config(cluster);
    cfg.set("allow.auto.create.topics", "false")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (k, v) in set {
        cfg.set(*k, *v);
    }
    cfg.create_with_context(QuietContext).map_err(|e| match e {
        KafkaError::ClientCreation(_) => not_accepted(e),
        e => kafka_error(cluster, what, &e),
    })
}

/// A producer with the caller's delivery-report context; `set` adds the call's settings.
pub fn producer<C: ProducerContext>(
    cluster: &BTreeMap<String, String>,
    set: &[(&str, &str)],
    context: C,
) -> Result<BaseProducer<C>> {
    let mut cfg = client_config(cluster);
    for (k, v) in set {
        cfg.set(*k, *v);
    }
    cfg.create_with_context(context).map_err(not_accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(servers: &str) -> BTreeMap<String, String> {
        [("bootstrap.servers".to_string(), servers.to_string())].into()
    }

    #[test]
    fn one_admin_client_per_cluster_settings_for_the_process() {
        // Nothing listens there: creating a client does not connect yet.
        let a = admin_client(&cluster("127.0.0.1:1"), "a").unwrap();
        let b = admin_client(&cluster("127.0.0.1:1"), "b").unwrap();
        let other = admin_client(&cluster("127.0.0.1:2"), "c").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same settings share one client");
        assert!(!Arc::ptr_eq(&a, &other), "other settings get their own");
    }
}
