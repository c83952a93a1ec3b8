//! SASL exchanges as I/O-free state machines: PLAIN (RFC 4616) and SCRAM-SHA-256/512
//! (RFC 5802, RFC 7677). Each takes the server's last message and gives the client's
//! next one; the connection carries them in SaslAuthenticate requests (`login.rs`).
//!
//! The hashes, HMAC and PBKDF2 come from the RustCrypto crates; this file only puts the
//! messages together and checks them. No maintained, open-source SCRAM crate offers
//! SHA-512, the mechanism most Kafka deployments use (decision 57).

use std::fmt;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// A password: never printed, in logs, errors or `Debug` output.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: &str) -> Secret {
        Secret(Arc::from(s))
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The SASL mechanisms wanmirror speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    /// The names the config accepts, as Kafka spells them.
    pub const NAMES: &'static str = "\"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\"";

    pub fn parse(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(Mechanism::ScramSha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Why an exchange failed. Never carries the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The server refused the credentials inside the exchange (SCRAM's `e=`).
    #[error("the broker refused the login: {0}")]
    Refused(String),
    /// The server's messages break the mechanism's rules, or its proof is wrong.
    #[error("{0}")]
    Protocol(String),
    /// Our own input cannot be sent (a NUL in a PLAIN name, say).
    #[error("{0}")]
    Input(String),
}

/// The SCRAM iteration counts accepted from a server: RFC 7677 asks for at least
/// 4096 (Kafka's minimum too); a huge count would be a server making us burn CPU.
const MIN_ITERATIONS: u32 = 4096;
const MAX_ITERATIONS: u32 = 1_000_000;

/// PBKDF2 results by salt and iteration count. Every pooled connection logs in; the
/// salted password is the expensive part and is the same for all of them. It is as
/// good as the password for logging in, so `Debug` never shows it.
#[derive(Default)]
pub struct KeyCache(Mutex<Option<Salted>>);

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyCache(***)")
    }
}

/// A salt, an iteration count, and the salted password they give.
struct Salted {
    salt: Vec<u8>,
    iterations: u32,
    key: Vec<u8>,
}

/// One login's exchange.
#[derive(Debug)]
pub struct Exchange {
    mech: Mechanism,
    user: String,
    password: Secret,
    state: State,
}

#[derive(Debug)]
enum State {
    Start,
    /// PLAIN sent: the server's answer (empty) ends it.
    PlainSent,
    /// SCRAM client-first sent; its bare part and our nonce are kept.
    FirstSent {
        bare: String,
        nonce: String,
    },
    /// SCRAM client-final sent; the server signature it must answer with.
    FinalSent {
        server_signature: Vec<u8>,
    },
    Done,
}

impl Exchange {
    /// An exchange for `user`; `nonce` is SCRAM's client nonce (printable, no comma).
    pub fn new(mech: Mechanism, user: &str, password: Secret, nonce: String) -> Exchange {
        let state = match mech {
            Mechanism::Plain => State::Start,
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => State::FirstSent {
                bare: format!("n={},r={nonce}", escape_name(user)),
                nonce,
            },
        };
        Exchange {
            mech,
            user: user.to_string(),
            password,
            state,
        }
    }

    /// The client's first message.
    pub fn first(&mut self) -> Result<Vec<u8>, SaslError> {
        match (&self.mech, &self.state) {
            (Mechanism::Plain, State::Start) => {
                let (u, p) = (self.user.as_str(), self.password.expose());
                if u.contains('\0') || p.contains('\0') {
                    return Err(SaslError::Input(
                        "PLAIN user names and passwords cannot contain a NUL character".into(),
                    ));
                }
                self.state = State::PlainSent;
                // RFC 4616: [authzid] NUL authcid NUL passwd, with no authzid.
                Ok(format!("\0{u}\0{p}").into_bytes())
            }
            (_, State::FirstSent { bare, .. }) => Ok(format!("n,,{bare}").into_bytes()),
            _ => Err(SaslError::Protocol(
                "the first message was already sent".into(),
            )),
        }
    }

    /// Takes the server's message: `Some(next)` to send, `None` when the login is done
    /// and the server proved itself (SCRAM) or accepted us (PLAIN).
    pub fn next(&mut self, server: &[u8], keys: &KeyCache) -> Result<Option<Vec<u8>>, SaslError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::PlainSent => Ok(None),
            State::FirstSent { bare, nonce } => {
                let (reply, server_signature) = self.client_final(&bare, &nonce, server, keys)?;
                self.state = State::FinalSent { server_signature };
                Ok(Some(reply))
            }
            State::FinalSent { server_signature } => {
                let text = utf8(server)?;
                let attrs = attributes(text);
                if let Some(e) = attrs.iter().find(|(k, _)| *k == 'e') {
                    return Err(SaslError::Refused(e.1.to_string()));
                }
                let v = attrs
                    .iter()
                    .find(|(k, _)| *k == 'v')
                    .ok_or_else(|| {
                        SaslError::Protocol(format!(
                            "the broker's final SCRAM message has no server signature: {text:?}"
                        ))
                    })?
                    .1;
                let got = B64.decode(v).map_err(|_| {
                    SaslError::Protocol("the broker's server signature is not base64".into())
                })?;
                if !constant_time_eq(&got, &server_signature) {
                    return Err(SaslError::Protocol(
                        "the broker's SCRAM server signature does not verify: it does not know this user's credentials".into(),
                    ));
                }
                Ok(None)
            }
            State::Start | State::Done => Err(SaslError::Protocol(
                "a server message arrived out of turn".into(),
            )),
        }
    }

    /// Builds the client-final message from the server-first one; also returns the
    /// server signature the server must prove itself with.
    fn client_final(
        &self,
        bare: &str,
        nonce: &str,
        server: &[u8],
        keys: &KeyCache,
    ) -> Result<(Vec<u8>, Vec<u8>), SaslError> {
        let text = utf8(server)?;
        let attrs = attributes(text);
        if let Some(e) = attrs.iter().find(|(k, _)| *k == 'e') {
            return Err(SaslError::Refused(e.1.to_string()));
        }
        if attrs.first().is_some_and(|(k, _)| *k == 'm') {
            return Err(SaslError::Protocol(
                "the broker asks for a mandatory SCRAM extension we do not know".into(),
            ));
        }
        let get = |key: char| {
            attrs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    SaslError::Protocol(format!(
                        "the broker's first SCRAM message has no {key}= attribute"
                    ))
                })
        };
        let full_nonce = get('r')?;
        if !full_nonce.starts_with(nonce) || full_nonce.len() <= nonce.len() {
            return Err(SaslError::Protocol(
                "the broker's SCRAM nonce does not extend ours".into(),
            ));
        }
        let salt = B64
            .decode(get('s')?)
            .map_err(|_| SaslError::Protocol("the broker's SCRAM salt is not base64".into()))?;
        let iterations: u32 = get('i')?.parse().map_err(|_| {
            SaslError::Protocol("the broker's SCRAM iteration count is not a number".into())
        })?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(SaslError::Protocol(format!(
                "the broker's SCRAM iteration count {iterations} is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
            )));
        }
        let salted = keys.salted(self.mech, self.password.expose(), &salt, iterations);
        let without_proof = format!("c={},r={full_nonce}", B64.encode("n,,"));
        let auth_message = format!("{bare},{text},{without_proof}");
        let client_key = hmac(self.mech, &salted, b"Client Key");
        let stored_key = hash(self.mech, &client_key);
        let client_signature = hmac(self.mech, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(self.mech, &salted, b"Server Key");
        let server_signature = hmac(self.mech, &server_key, auth_message.as_bytes());
        let reply = format!("{without_proof},p={}", B64.encode(proof));
        Ok((reply.into_bytes(), server_signature))
    }
}

impl KeyCache {
    fn salted(&self, mech: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.as_ref() {
            if c.salt == salt && c.iterations == iterations {
                return c.key.clone();
            }
        }
        let key = match mech {
            Mechanism::ScramSha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
                out.to_vec()
            }
            _ => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
                out.to_vec()
            }
        };
        *cached = Some(Salted {
            salt: salt.to_vec(),
            iterations,
            key: key.clone(),
        });
        key
    }
}

fn hmac(mech: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mech {
        Mechanism::ScramSha512 => {
            let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(mech: Mechanism, data: &[u8]) -> Vec<u8> {
    match mech {
        Mechanism::ScramSha512 => Sha512::digest(data).to_vec(),
        _ => Sha256::digest(data).to_vec(),
    }
}

/// Equal contents, compared without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn utf8(b: &[u8]) -> Result<&str, SaslError> {
    std::str::from_utf8(b)
        .map_err(|_| SaslError::Protocol("the broker's SCRAM message is not UTF-8".into()))
}

/// `k=v` pairs of a SCRAM message, in order.
fn attributes(text: &str) -> Vec<(char, &str)> {
    text.split(',')
        .filter_map(|a| {
            // Keys are one ASCII letter; anything else is not an attribute.
            let (k, v) = a.split_once('=')?;
            let mut c = k.chars();
            match (c.next(), c.next()) {
                (Some(k), None) if k.is_ascii_alphabetic() => Some((k, v)),
                _ => None,
            }
        })
        .collect()
}

/// RFC 5802's saslname: `=` and `,` escaped.
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// A fresh client nonce: 24 random bytes, base64 (printable, never a comma).
pub fn nonce() -> String {
    B64.encode(rand::random::<[u8; 24]>())
}

#[cfg(test)]
mod tests;
