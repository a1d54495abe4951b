//! Who may connect: the volume whose database the client names, as that volume's user, with
//! SCRAM-SHA-256 against its verifier. An unknown database is 3D000; a wrong user or password
//! is 28P01, the same for both (a wrong user runs the exchange against a verifier nobody has).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::ScramSecret;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};

use super::errors::fatal;
use super::{Limits, Slot};
use crate::engine::Engine;
use crate::scram::Verifier;

pub(super) struct Credentials {
    engine: Arc<Engine>,
    limits: Limits,
    /// This connection's place among the node's and its database's connections.
    slot: Mutex<Option<Slot>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials")
    }
}

impl Credentials {
    pub(super) fn new(engine: Arc<Engine>, limits: Limits) -> Self {
        Credentials {
            engine,
            limits,
            slot: Mutex::new(None),
        }
    }
}

/// The database a client asks for: the one it names, else (as in PostgreSQL) its user's.
pub(super) fn database_of<'a>(database: Option<&'a str>, user: Option<&'a str>) -> &'a str {
    database.or(user).unwrap_or_default()
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_string(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let database = database_of(login.database(), login.user());
        let Some((volume, access)) = self.engine.database(database) else {
            return Err(fatal(
                "3D000",
                format!("database \"{database}\" does not exist"),
            ));
        };
        if self.engine.volume(&volume).is_ok_and(|v| v.is_switching()) {
            return Err(fatal(
                "57P03",
                "the database is being backtracked; connect again in a moment",
            ));
        }
        let slot = self.limits.admit(&volume)?;
        *self.slot.lock().unwrap() = Some(slot);
        let verifier = if login.user() == Some(access.username.as_str()) {
            Verifier::parse(&access.verifier)
                .map_err(|e| fatal("XX000", format!("the stored verifier is unreadable: {e}")))?
        } else {
            // Nobody's password matches a fresh verifier of a random one.
            Verifier::new(&uuid::Uuid::new_v4().to_string())
        };
        Ok((
            ScramSecret::Verifier {
                salt: verifier.salt,
                iterations: verifier.iterations as usize,
                stored_key: verifier.stored_key.to_vec(),
                server_key: verifier.server_key.to_vec(),
            },
            None,
        ))
    }
}
