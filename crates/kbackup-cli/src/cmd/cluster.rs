//! The Kafka client settings every cluster-facing verb shares (`--bootstrap-server`,
//! `--config`, `--config-file`), and the translation of Java client properties.
//!
//! Users of Kafka's Java tools keep their credentials in a Java client properties file (JAAS
//! line, trust and key stores). The CLI's client is librdkafka, which names some settings
//! differently and cannot run Java login modules or read JKS stores. So `--config-file`
//! accepts such a file: what has a librdkafka equivalent is translated, and what has none is
//! refused with the key and what to do instead. Error messages name keys, never values: a
//! settings file holds passwords.

use clap::Args;
use kbackup_core::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Connection to a Kafka cluster (shared by `backup`, `restore` and `status`).
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long = "bootstrap-server", value_name = "HOST:PORT")]
    pub bootstrap_server: String,
    /// A Kafka client setting (librdkafka name), for example security.protocol=SASL_SSL;
    /// repeat for several. Applied after --config-file.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// A file of Kafka client settings, one KEY=VALUE per line; blank lines and lines starting
    /// with # are ignored. librdkafka names, or a Java client properties file (sasl.jaas.config,
    /// PKCS12/PEM stores), which is translated. Use it for secrets that should not be in `ps`.
    #[arg(long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
}

impl ClusterArgs {
    /// The client settings: --config-file (translated), then --config, then --bootstrap-server.
    pub fn cluster(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        if let Some(file) = &self.config_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Error::io(e, "read --config-file", file))?;
            let mut raw = BTreeMap::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                    continue;
                }
                let (k, v) = split_kv(line).ok_or_else(|| {
                    Error::Config(format!(
                        "{} line {} is not KEY=VALUE; write one setting per line",
                        file.display(),
                        n + 1
                    ))
                })?;
                raw.insert(k, v);
            }
            out = translate_java(raw).map_err(|e| match e {
                Error::Config(m) => Error::Config(format!("{}: {m}", file.display())),
                other => other,
            })?;
        }
        for kv in &self.config {
            let (k, v) = split_kv(kv).ok_or_else(|| {
                Error::Config(format!(
                    "--config {kv:?} is not KEY=VALUE; write for example --config security.protocol=SSL"
                ))
            })?;
            out.insert(k, v);
        }
        if self.bootstrap_server.trim().is_empty() {
            return Err(Error::Config(
                "--bootstrap-server is empty; give HOST:PORT of a broker".into(),
            ));
        }
        out.insert(
            "bootstrap.servers".into(),
            self.bootstrap_server.trim().to_string(),
        );
        Ok(out)
    }
}

fn split_kv(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    let k = k.trim();
    (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
}

/// Java-only keys that carry no meaning for librdkafka once the rest is translated.
const JAVA_ONLY_DROPPED: &[&str] = &[
    "ssl.truststore.type",
    "ssl.keystore.type",
    "ssl.truststore.password",
    "client.dns.lookup",
    "sasl.login.refresh.buffer.seconds",
    "sasl.login.refresh.min.period.seconds",
    "sasl.login.refresh.window.factor",
    "sasl.login.refresh.window.jitter",
];

/// Java settings with no librdkafka equivalent, and what to use instead.
const JAVA_ONLY_REFUSED: &[(&str, &str)] = &[
    (
        "sasl.login.callback.handler.class",
        "a Java login callback runs only in a JVM; for OAUTHBEARER with an OIDC token \
         endpoint set sasl.oauthbearer.token.endpoint.url with clientId/clientSecret in \
         sasl.jaas.config (translated), or run the backup through the Connect plugin",
    ),
    (
        "sasl.client.callback.handler.class",
        "a Java SASL callback (such as AWS MSK IAM) runs only in a JVM; run the backup \
         through the Connect plugin, whose clients are Java clients",
    ),
    (
        "ssl.truststore.certificates",
        "write the CA certificates to a PEM file and set ssl.ca.location",
    ),
    (
        "ssl.keystore.certificate.chain",
        "write the certificate chain to a PEM file and set ssl.certificate.location",
    ),
    (
        "ssl.keystore.key",
        "write the private key to a PEM file and set ssl.key.location",
    ),
];

/// The value of `name="..."` (or `name=...`) in a JAAS line.
fn jaas_option(jaas: &str, name: &str) -> Option<String> {
    let mut rest = jaas;
    while let Some(i) = rest.find(name) {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let after = rest[i + name.len()..].trim_start();
        if before_ok {
            if let Some(v) = after.strip_prefix('=') {
                let v = v.trim_start();
                if let Some(q) = v.strip_prefix('"') {
                    return q.find('"').map(|end| q[..end].to_string());
                }
                let end = v
                    .find(|c: char| c.is_whitespace() || c == ';')
                    .unwrap_or(v.len());
                return Some(v[..end].to_string());
            }
        }
        rest = &rest[i + name.len()..];
    }
    None
}

/// Translates Java client properties into librdkafka settings; librdkafka settings pass
/// through unchanged. Errors name the key and the fix, never a value.
pub fn translate_java(raw: BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    // Without a type, the file name decides: librdkafka's own ssl.keystore.location is always
    // PKCS12, and a Java user's "truststore.jks" is what it says.
    let store_type = |key: &str, path: &str| {
        raw.get(key)
            .map(|t| t.to_ascii_uppercase())
            .unwrap_or_else(|| {
                let lower = path.to_ascii_lowercase();
                if lower.ends_with(".jks") {
                    "JKS".into()
                } else if [".pem", ".crt", ".cer"].iter().any(|e| lower.ends_with(e)) {
                    "PEM".into()
                } else {
                    "PKCS12".into()
                }
            })
    };
    for (k, v) in &raw {
        if let Some((_, fix)) = JAVA_ONLY_REFUSED.iter().find(|(key, _)| key == k) {
            return Err(Error::Config(format!(
                "{k} is a Java client setting the kbackup CLI (librdkafka) cannot use: {fix}"
            )));
        }
        match k.as_str() {
            key if JAVA_ONLY_DROPPED.contains(&key) => {}
            "sasl.jaas.config" => {
                let module = v.split_whitespace().next().unwrap_or("");
                if module.ends_with("PlainLoginModule") || module.ends_with("ScramLoginModule") {
                    for (opt, to) in [("username", "sasl.username"), ("password", "sasl.password")]
                    {
                        let val = jaas_option(v, opt).ok_or_else(|| {
                            Error::Config(format!(
                                "sasl.jaas.config has no {opt}=\"...\"; write \
                                 {module} required username=\"...\" password=\"...\";"
                            ))
                        })?;
                        out.insert(to.to_string(), val);
                    }
                } else if module.ends_with("OAuthBearerLoginModule") {
                    out.insert("sasl.oauthbearer.method".into(), "oidc".into());
                    for (opt, to) in [
                        ("clientId", "sasl.oauthbearer.client.id"),
                        ("clientSecret", "sasl.oauthbearer.client.secret"),
                        ("scope", "sasl.oauthbearer.scope"),
                    ] {
                        if let Some(val) = jaas_option(v, opt) {
                            out.insert(to.to_string(), val);
                        }
                    }
                } else {
                    return Err(Error::Config(format!(
                        "sasl.jaas.config uses the login module {module:?}, which the kbackup \
                         CLI (librdkafka) cannot run; PLAIN, SCRAM and OAUTHBEARER (OIDC) are \
                         translated, Kerberos is sasl.kerberos.keytab / sasl.kerberos.principal"
                    )));
                }
            }
            "sasl.mechanism" => {
                out.insert("sasl.mechanisms".into(), v.clone());
            }
            "sasl.oauthbearer.token.endpoint.url" => {
                out.insert(k.clone(), v.clone());
                out.insert("sasl.oauthbearer.method".into(), "oidc".into());
            }
            "ssl.truststore.location" => match store_type("ssl.truststore.type", v).as_str() {
                "PEM" => {
                    out.insert("ssl.ca.location".into(), v.clone());
                }
                t => {
                    return Err(Error::Config(format!(
                        "ssl.truststore.location is a {t} trust store, which the kbackup CLI \
                         (librdkafka) cannot read; export the CA as PEM (keytool -exportcert \
                         -rfc -keystore FILE -alias ALIAS -file ca.pem) and set ssl.ca.location"
                    )))
                }
            },
            "ssl.keystore.location" => match store_type("ssl.keystore.type", v).as_str() {
                "PKCS12" => {
                    out.insert(k.clone(), v.clone());
                }
                "PEM" => {
                    out.insert("ssl.certificate.location".into(), v.clone());
                    out.insert("ssl.key.location".into(), v.clone());
                }
                t => {
                    return Err(Error::Config(format!(
                        "ssl.keystore.location is a {t} key store, which the kbackup CLI \
                         (librdkafka) cannot read; convert it to PKCS12 (keytool \
                         -importkeystore -srckeystore FILE -destkeystore client.p12 \
                         -deststoretype PKCS12) and set ssl.keystore.type=PKCS12, or use \
                         ssl.certificate.location and ssl.key.location with PEM files"
                    )))
                }
            },
            "ssl.endpoint.identification.algorithm" => {
                let v = if v.is_empty() { "none" } else { v.as_str() };
                out.insert(k.clone(), v.to_string());
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &[&str], file: Option<PathBuf>) -> ClusterArgs {
        ClusterArgs {
            bootstrap_server: " h:9092 ".into(),
            config: config.iter().map(|s| s.to_string()).collect(),
            config_file: file,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cluster_settings_layer_file_then_flags_then_bootstrap() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("client.properties");
        std::fs::write(
            &f,
            "# comment\n\nsecurity.protocol = SASL_SSL\nsasl.password=a=b\nbootstrap.servers=ignored:1\n",
        )
        .unwrap();
        let c = args(&["security.protocol=SSL", "x.y="], Some(f))
            .cluster()
            .unwrap();
        assert_eq!(c["security.protocol"], "SSL");
        assert_eq!(c["sasl.password"], "a=b");
        assert_eq!(c["bootstrap.servers"], "h:9092");
        assert_eq!(c["x.y"], "");
    }

    #[test]
    fn malformed_settings_name_the_fix() {
        let e = args(&["novalue"], None).cluster().unwrap_err().to_string();
        assert!(e.contains("KEY=VALUE") && e.contains("novalue"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c");
        std::fs::write(&f, "ok=1\nbroken line\n").unwrap();
        let e = args(&[], Some(f)).cluster().unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = args(&[], Some(d.path().join("missing")))
            .cluster()
            .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }

    #[test]
    fn a_broken_settings_line_is_not_echoed_because_it_may_be_a_secret() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c");
        std::fs::write(&f, "sasl.password hunter2-secret\n").unwrap();
        let e = args(&[], Some(f)).cluster().unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn java_scram_and_plain_jaas_lines_become_username_and_password() {
        for module in [
            "org.apache.kafka.common.security.scram.ScramLoginModule",
            "org.apache.kafka.common.security.plain.PlainLoginModule",
        ] {
            let c = translate_java(map(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                (
                    "sasl.jaas.config",
                    &format!(r#"{module} required username="backup" password="p w;=x";"#),
                ),
                ("ssl.truststore.location", "/etc/ca.pem"),
                ("ssl.truststore.type", "PEM"),
            ]))
            .unwrap();
            assert_eq!(c["sasl.username"], "backup");
            assert_eq!(c["sasl.password"], "p w;=x");
            assert_eq!(c["sasl.mechanisms"], "SCRAM-SHA-512");
            assert_eq!(c["ssl.ca.location"], "/etc/ca.pem");
            assert!(!c.contains_key("sasl.jaas.config") && !c.contains_key("ssl.truststore.type"));
        }
    }

    #[test]
    fn java_oauthbearer_oidc_is_translated() {
        let c = translate_java(map(&[
            ("sasl.mechanism", "OAUTHBEARER"),
            (
                "sasl.jaas.config",
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required \
                 clientId=\"kb\" clientSecret=\"s3\" scope=\"kafka\";",
            ),
            ("sasl.oauthbearer.token.endpoint.url", "https://idp/token"),
        ]))
        .unwrap();
        assert_eq!(c["sasl.oauthbearer.method"], "oidc");
        assert_eq!(c["sasl.oauthbearer.client.id"], "kb");
        assert_eq!(c["sasl.oauthbearer.client.secret"], "s3");
        assert_eq!(c["sasl.oauthbearer.scope"], "kafka");
        assert_eq!(
            c["sasl.oauthbearer.token.endpoint.url"],
            "https://idp/token"
        );
    }

    #[test]
    fn java_pkcs12_keystore_passes_and_jks_stores_are_refused_naming_the_key() {
        let c = translate_java(map(&[
            ("ssl.keystore.location", "/k.p12"),
            ("ssl.keystore.type", "PKCS12"),
            ("ssl.keystore.password", "ks-secret"),
        ]))
        .unwrap();
        assert_eq!(c["ssl.keystore.location"], "/k.p12");
        assert_eq!(c["ssl.keystore.password"], "ks-secret");
        // librdkafka's own setting has no type: PKCS12 unless the name says otherwise
        let c = translate_java(map(&[("ssl.keystore.location", "/client.p12")])).unwrap();
        assert_eq!(c["ssl.keystore.location"], "/client.p12");
        let c = translate_java(map(&[("ssl.truststore.location", "/ca.pem")])).unwrap();
        assert_eq!(c["ssl.ca.location"], "/ca.pem");
        assert!(translate_java(map(&[("ssl.truststore.location", "/t.jks")])).is_err());
        for (key, ty) in [
            ("ssl.truststore.location", "ssl.truststore.type"),
            ("ssl.keystore.location", "ssl.keystore.type"),
        ] {
            let e = translate_java(map(&[(key, "/s.jks"), (ty, "JKS")]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("keytool"), "{e}");
        }
    }

    #[test]
    fn java_callback_classes_and_unknown_login_modules_are_refused_without_values() {
        let e = translate_java(map(&[(
            "sasl.client.callback.handler.class",
            "software.amazon.msk.auth.iam.IAMClientCallbackHandler",
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sasl.client.callback.handler.class") && e.contains("Connect"),
            "{e}"
        );
        let e = translate_java(map(&[(
            "sasl.jaas.config",
            "com.example.Custom required token=\"top-secret\";",
        )]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("com.example.Custom") && !e.contains("top-secret"),
            "{e}"
        );
    }
}
