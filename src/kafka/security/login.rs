//! The SASL login of one connection: SaslHandshake, then SaslAuthenticate carrying the
//! exchange of `sasl.rs` until it ends. A failure fails the connection for good.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::sasl::{nonce, Exchange};
use super::Login;
use crate::kafka::connection::Connection;
use crate::kafka::error::{KafkaError, Result};

/// Logs `conn` in. Kafka takes only ApiVersions before this on a SASL listener.
pub async fn login(conn: &Connection, login: Arc<Login>) -> Result<()> {
    let fail = |reason: String| KafkaError::Auth {
        addr: conn.addr().to_string(),
        mechanism: login.mechanism.name(),
        user: login.username.clone(),
        reason,
    };
    // v0 would carry the exchange as raw frames without SaslAuthenticate; every broker
    // since Kafka 1.0 offers v1.
    if conn.version::<SaslHandshakeRequest>()? < 1 {
        return Err(fail("the broker offers only SaslHandshake v0".into()));
    }
    let hs = conn
        .send(
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str(login.mechanism.name())),
        )
        .await?;
    match ResponseError::try_from_code(hs.error_code) {
        None => {}
        Some(ResponseError::UnsupportedSaslMechanism) => {
            let offered: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(fail(format!(
                "the broker does not offer this mechanism (it offers {})",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            )));
        }
        Some(ResponseError::IllegalSaslState) => {
            return Err(fail(
                "the listener does not take a SASL login (ILLEGAL_SASL_STATE): is this a PLAINTEXT or SSL port?"
                    .into(),
            ))
        }
        Some(code) => return Err(fail(format!("SaslHandshake failed: {code:?}"))),
    }
    let mut exchange = Exchange::new(
        login.mechanism,
        &login.username,
        login.password.clone(),
        nonce(),
    );
    let mut msg = exchange.first().map_err(|e| fail(e.to_string()))?;
    loop {
        let resp = conn
            .send(&SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(msg)))
            .await?;
        if resp.error_code != 0 {
            let code = ResponseError::try_from_code(resp.error_code)
                .map(|c| format!("{c:?}"))
                .unwrap_or_else(|| format!("error {}", resp.error_code));
            let said = resp
                .error_message
                .map(|m| format!(": {}", m.as_str()))
                .unwrap_or_default();
            return Err(fail(format!("{code}{said}")));
        }
        // The first SCRAM step salts the password (PBKDF2, up to a second at the
        // largest iteration count we accept): off the runtime's threads.
        let keys = login.clone();
        let answer = resp.auth_bytes;
        let (back, step) = tokio::task::spawn_blocking(move || {
            let step = exchange.next(&answer, &keys.keys);
            (exchange, step)
        })
        .await
        .map_err(|e| fail(format!("the login task failed: {e}")))?;
        exchange = back;
        match step {
            Ok(Some(next)) => msg = next,
            Ok(None) => return Ok(()),
            Err(e) => return Err(fail(e.to_string())),
        }
    }
}
