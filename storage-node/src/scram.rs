//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677) as PostgreSQL keeps them.
//!
//! A cluster's master password is never kept: the control plane turns it into a verifier in
//! PostgreSQL's own format, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
//! (base64), and the storage node authenticates connections with it (pgwire's SCRAM
//! exchange, given the verifier). A server needs only StoredKey and ServerKey: it checks that
//! the client's proof, XORed with `HMAC(StoredKey, AuthMessage)`, hashes to StoredKey, and
//! signs with ServerKey. (Keeping the salted password instead, as some servers do, would let
//! whoever reads it log in.)
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

    /// RFC 7677 §3: user "user", password "pencil"; the messages of its exchange.
    const AUTH_MESSAGE: &str = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
        r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
        c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const CLIENT_PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_SIGNATURE: &str = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier() -> Verifier {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        Verifier::with_salt("pencil", &salt, 4096)
    }

    #[test]
    fn the_rfc_7677_exchange_checks_out_from_the_verifier_alone() {
        let verifier = rfc_verifier();
        // The server's check: the proof XOR HMAC(StoredKey, AuthMessage) hashes to StoredKey.
        let proof = STANDARD.decode(CLIENT_PROOF).unwrap();
        let signature = hmac(&verifier.stored_key, AUTH_MESSAGE.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&client_key)),
            verifier.stored_key
        );
        // And its answer, signed with ServerKey.
        assert_eq!(
            STANDARD.encode(hmac(&verifier.server_key, AUTH_MESSAGE.as_bytes())),
            SERVER_SIGNATURE
        );
        assert_ne!(
            Verifier::with_salt("pencil2", &verifier.salt, 4096),
            verifier
        );
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
