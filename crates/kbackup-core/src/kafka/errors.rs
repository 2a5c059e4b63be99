//! Kafka errors as the core's [`Error::Kafka`]: retriable or not, the servers, the fix.

use crate::error::Error;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::collections::BTreeMap;
use std::sync::Mutex;

pub(crate) fn servers(cluster: &BTreeMap<String, String>) -> &str {
    cluster
        .get("bootstrap.servers")
        .map(String::as_str)
        .unwrap_or("(no bootstrap.servers configured)")
}

/// True for error codes that mean "could not reach or hear back from the cluster".
pub(crate) fn code_is_retriable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | OperationTimedOut
            | RequestTimedOut
            | NetworkException
            | LeaderNotAvailable
            | NotLeaderForPartition
            | NotController
            | Resolve
            | BrokerNotAvailable
            | CoordinatorNotAvailable
            | NotCoordinator
    )
}

/// Maps an rdkafka error to [`Error::Kafka`] with the bootstrap servers and a fix.
pub fn kafka_error(cluster: &BTreeMap<String, String>, what: &str, e: &KafkaError) -> Error {
    let retriable = e.rdkafka_error_code().is_some_and(code_is_retriable);
    map_code(cluster, what, retriable, e.to_string())
}

/// True for the errors a broker answers when the principal lacks an ACL.
pub fn is_authorization(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed
            | TransactionalIdAuthorizationFailed
            | DelegationTokenAuthorizationFailed
    )
}

/// Like [`kafka_error`], but an authorization failure gets `fix` (the ACL to grant) instead of
/// the generic pointer to docs/security.md.
pub fn acl_error(
    cluster: &BTreeMap<String, String>,
    what: &str,
    e: &KafkaError,
    fix: &str,
) -> Error {
    let auth = e.rdkafka_error_code().is_some_and(is_authorization)
        || e.to_string().contains("uthorization failed");
    if !auth {
        return kafka_error(cluster, what, e);
    }
    Error::Kafka {
        what: what.to_string(),
        retriable: false,
        detail: format!(
            "{e}: {fix} (cluster {}; docs/security.md)",
            servers(cluster)
        ),
    }
}

pub(crate) fn map_code(
    cluster: &BTreeMap<String, String>,
    what: &str,
    retriable: bool,
    err: String,
) -> Error {
    let detail = if retriable {
        format!(
            "{err}; could not reach the cluster at {}: check bootstrap.servers, that the \
             brokers are up and reachable from this host, and the security settings",
            servers(cluster)
        )
    } else if err.contains("uthorization failed") || err.contains("AuthorizationFailed") {
        format!(
            "{err}: the principal lacks an ACL for this; docs/security.md lists the ACLs each \
             operation needs (cluster {})",
            servers(cluster)
        )
    } else {
        format!("{err} (cluster {})", servers(cluster))
    };
    Error::Kafka {
        what: what.to_string(),
        retriable,
        detail,
    }
}

/// The last authentication or TLS failure a client reported in the background: a failed call
/// then says "authentication failed", not "could not reach the cluster".
static AUTH_FAILURE: Mutex<Option<String>> = Mutex::new(None);

pub(super) fn note_auth_failure(reason: &str) {
    *AUTH_FAILURE.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
}

/// Replaces a connection error by the authentication failure behind it, if a client saw one.
pub fn explain_auth_failure(e: Error) -> Error {
    let Some(reason) = AUTH_FAILURE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    else {
        return e;
    };
    match e {
        Error::Kafka { what, .. } => Error::Kafka {
            what,
            retriable: false,
            detail: format!(
                "{reason}; check the credentials (sasl.username / sasl.password, the client \
                 certificate and key) and sasl.mechanism in --config / --config-file"
            ),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_between_leaders_is_retriable_a_refusal_is_not() {
        // Right after CreateTopics the broker may answer "not leader" for a moment (a restore
        // reading the end offsets of the topic it just created failed on it).
        for code in [
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
        ] {
            assert!(code_is_retriable(code), "{code:?}");
        }
        assert!(!code_is_retriable(
            RDKafkaErrorCode::TopicAuthorizationFailed
        ));
    }
}
