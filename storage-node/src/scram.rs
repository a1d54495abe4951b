//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it, from a stored verifier only.
//!
//! A cluster's master password is never kept: the control plane turns it into a verifier in
//! PostgreSQL's own format, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
//! (base64), and the storage node authenticates connections with it. The server needs only
//! StoredKey and ServerKey: it checks that the client's proof, XORed with
//! `HMAC(StoredKey, AuthMessage)`, hashes to StoredKey, and signs with ServerKey. (Keeping the
//! salted password instead, as some servers do, would let whoever reads it log in.)
//!
//! Passwords are printable ASCII (the control plane refuses others), for which SASLprep, the
//! normalization clients apply first, changes nothing.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// PostgreSQL's default.
pub const ITERATIONS: u32 = 4096;

type HmacSha256 = Hmac<Sha256>;

/// What the server keeps of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A verifier is not a password, but it is not for logs either.
        f.write_str("Verifier(SCRAM-SHA-256)")
    }
}

impl Verifier {
    /// The verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Verifier {
        let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
        Verifier::with_salt(password, &salt, ITERATIONS)
    }

    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let salted = hi(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Reads PostgreSQL's format.
    pub fn parse(text: &str) -> Result<Verifier, String> {
        let bad = || "not a SCRAM-SHA-256 verifier".to_string();
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let key = |b64: &str| -> Result<[u8; 32], String> {
            STANDARD
                .decode(b64)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(bad)
        };
        Ok(Verifier {
            iterations: iterations.parse().ok().filter(|i| *i > 0).ok_or_else(bad)?,
            salt: STANDARD.decode(salt).map_err(|_| bad())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// A server's side of one exchange, after the client's first message.
#[derive(Debug)]
pub struct Exchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// Why an exchange failed: a malformed message (a protocol violation), or the wrong password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    Malformed(String),
    WrongPassword,
}

impl Exchange {
    /// Answers `client_first` (`n,,n=<user>,r=<nonce>`) with the salt and iterations of
    /// `verifier` and a nonce of our own appended to the client's. Channel binding is not
    /// offered (`n` or `y` only).
    pub fn start(
        client_first: &str,
        verifier: &Verifier,
        server_nonce: &str,
    ) -> Result<(Exchange, String), ScramError> {
        let malformed = |what: &str| ScramError::Malformed(format!("SCRAM client-first: {what}"));
        let bare = match client_first.as_bytes() {
            [b'n' | b'y', b',', ..] => {
                let after_flag = &client_first[2..];
                let (authzid, bare) = after_flag
                    .split_once(',')
                    .ok_or_else(|| malformed("no GS2 header"))?;
                if !authzid.is_empty() {
                    return Err(malformed("an authorization identity is not supported"));
                }
                bare
            }
            [b'p', ..] => return Err(malformed("channel binding is not supported")),
            _ => return Err(malformed("bad GS2 header")),
        };
        let client_nonce = bare
            .split(',')
            .find_map(|part| part.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| malformed("no nonce"))?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let exchange = Exchange {
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Checks `client_final` (`c=<binding>,r=<nonce>,p=<proof>`) against `verifier` and returns
    /// the server-final message (`v=<signature>`) when the proof is right.
    pub fn finish(&self, client_final: &str, verifier: &Verifier) -> Result<String, ScramError> {
        let malformed = |what: &str| ScramError::Malformed(format!("SCRAM client-final: {what}"));
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("no proof"))?;
        let mut parts = without_proof.split(',');
        let binding = parts
            .next()
            .and_then(|p| p.strip_prefix("c="))
            .ok_or_else(|| malformed("no channel binding"))?;
        // "n,," or "y,," base64-encoded: no channel binding data.
        if binding != "biws" && binding != "eSws" {
            return Err(malformed("unexpected channel binding"));
        }
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or_else(|| malformed("no nonce"))?;
        if nonce != self.nonce {
            return Err(malformed("the nonce is not the one this exchange made"));
        }
        let proof = STANDARD
            .decode(proof)
            .ok()
            .filter(|p| p.len() == 32)
            .ok_or_else(|| malformed("bad proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        // Compared without an early exit: the time says nothing of where they differ.
        let difference = stored
            .iter()
            .zip(verifier.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference != 0 {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `Hi(password, salt, i)`: PBKDF2 with HMAC-SHA-256, one block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier() -> Verifier {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        Verifier::with_salt("pencil", &salt, 4096)
    }

    #[test]
    fn the_rfc_7677_exchange_succeeds_from_the_verifier_alone() {
        let verifier = rfc_verifier();
        let (exchange, server_first) =
            Exchange::start(CLIENT_FIRST, &verifier, SERVER_NONCE).unwrap();
        assert_eq!(server_first, SERVER_FIRST);
        assert_eq!(
            exchange.finish(CLIENT_FINAL, &verifier).unwrap(),
            SERVER_FINAL
        );
    }

    #[test]
    fn a_wrong_password_or_a_tampered_message_is_refused() {
        let wrong = Verifier::with_salt("pencil2", &rfc_verifier().salt, 4096);
        let (exchange, _) = Exchange::start(CLIENT_FIRST, &wrong, SERVER_NONCE).unwrap();
        assert_eq!(
            exchange.finish(CLIENT_FINAL, &wrong),
            Err(ScramError::WrongPassword)
        );
        let verifier = rfc_verifier();
        let (exchange, _) = Exchange::start(CLIENT_FIRST, &verifier, "other").unwrap();
        assert!(matches!(
            exchange.finish(CLIENT_FINAL, &verifier),
            Err(ScramError::Malformed(_))
        ));
        for bad in [
            "",
            "p=tls-unique,,n=user,r=x",
            "n,a=admin,n=user,r=x",
            "n,,n=user",
        ] {
            assert!(Exchange::start(bad, &verifier, "s").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_verifier_round_trips_in_postgresql_format_and_hides_in_logs() {
        let verifier = rfc_verifier();
        let text = verifier.to_string();
        assert!(
            text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{text}"
        );
        assert_eq!(Verifier::parse(&text).unwrap(), verifier);
        assert_eq!(format!("{verifier:?}"), "Verifier(SCRAM-SHA-256)");
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$0:AA==$AA==:AA==",
            "SCRAM-SHA-256$4096:AA==$AA==:AA==",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
        // A fresh salt each time.
        assert_ne!(Verifier::new("pencil"), Verifier::new("pencil"));
    }
}
