//! The simple query protocol: a string of statements, run one at a time in order, stopping at
//! the first error (as PostgreSQL does). `BEGIN`, `COMMIT` and `ROLLBACK` open and end one of
//! the node's transactions, which the connection's statements then run in; savepoints work
//! inside it as SQLite's. A transaction still open when the connection ends is rolled back.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::sink::Sink;
use futures::stream;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, METADATA_DATABASE, METADATA_USER};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::auth::database_of;
use super::errors::{fatal, from_volume};
use super::{split, types};
use crate::api::ExecuteRequest;
use crate::engine::volume::VolumeError;
use crate::engine::Engine;

/// One connection's state: its open transaction, if any (volume, transaction id).
pub(super) struct Session {
    engine: Arc<Engine>,
    transaction: Mutex<Option<(String, String)>>,
}

impl Session {
    pub(super) fn new(engine: Arc<Engine>) -> Self {
        Session {
            engine,
            transaction: Mutex::new(None),
        }
    }

    /// Runs an engine call off the async threads (it blocks on SQLite and the disk).
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Engine) -> Result<T, VolumeError> + Send + 'static,
    ) -> Result<T, VolumeError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || call(&engine))
            .await
            .unwrap_or_else(|e| Err(VolumeError::internal(e)))
    }

    async fn run(&self, volume: &str, sql: &str) -> Result<Response, VolumeError> {
        let verb = first_word(sql);
        let open = self.transaction.lock().unwrap().clone();
        match (verb.as_str(), open) {
            ("BEGIN" | "START", None) if !is_savepoint_verb(sql) => {
                let id = {
                    let volume = volume.to_string();
                    self.blocking(move |e| e.begin(&volume)).await?
                };
                *self.transaction.lock().unwrap() = Some((volume.to_string(), id));
                Ok(Response::TransactionStart(Tag::new("BEGIN")))
            }
            // Already in one: PostgreSQL warns and goes on.
            ("BEGIN" | "START", Some(_)) => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            ("COMMIT" | "END", Some((volume, id))) => {
                *self.transaction.lock().unwrap() = None;
                self.blocking(move |e| e.commit(&volume, &id)).await?;
                Ok(Response::TransactionEnd(Tag::new("COMMIT")))
            }
            ("ROLLBACK" | "ABORT", Some((volume, id))) if !is_savepoint_verb(sql) => {
                *self.transaction.lock().unwrap() = None;
                self.blocking(move |e| e.rollback(&volume, &id)).await?;
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            ("COMMIT" | "END", None) => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            ("ROLLBACK" | "ABORT", None) if !is_savepoint_verb(sql) => {
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            (_, open) => {
                let request = ExecuteRequest {
                    sql: sql.to_string(),
                    transaction_id: open.map(|(_, id)| id),
                    ..Default::default()
                };
                let result = {
                    let volume = volume.to_string();
                    self.blocking(move |e| e.execute(&volume, &request)).await
                };
                let result = match result {
                    Ok(result) => result,
                    Err(e) => {
                        if e.message.contains("rolled back") {
                            // The engine ended the transaction.
                            *self.transaction.lock().unwrap() = None;
                        }
                        return Err(e);
                    }
                };
                if result.columns.is_empty() {
                    return Ok(Response::Execution(command_tag(
                        &verb,
                        result.rows_affected,
                    )));
                }
                let fields = Arc::new(types::fields(&result.columns, &result.rows));
                let mut encoder = DataRowEncoder::new(fields.clone());
                let rows: Vec<PgWireResult<_>> = result
                    .rows
                    .iter()
                    .map(|values| types::row(&mut encoder, &fields, values))
                    .collect();
                Ok(Response::Query(QueryResponse::new(
                    fields,
                    stream::iter(rows),
                )))
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((volume, id)) = self.transaction.lock().unwrap().take() {
            let _ = self.engine.rollback(&volume, &id);
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let metadata = client.metadata();
        let database = database_of(
            metadata.get(METADATA_DATABASE).map(String::as_str),
            metadata.get(METADATA_USER).map(String::as_str),
        )
        .to_string();
        let Some((volume, _)) = self.engine.database(&database) else {
            return Err(fatal(
                "3D000",
                format!("database \"{database}\" does not exist any more"),
            ));
        };
        let mut out = Vec::new();
        for statement in split::statements(query) {
            match self.run(&volume, statement).await {
                Ok(response) => out.push(response),
                Err(e) => {
                    out.push(Response::Error(Box::new(from_volume(&e))));
                    break;
                }
            }
        }
        if out.is_empty() {
            out.push(Response::EmptyQuery);
        }
        Ok(out)
    }
}

fn first_word(sql: &str) -> String {
    sql.trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

/// `ROLLBACK TO [SAVEPOINT] x`, and `BEGIN`'s words that are not a transaction start
/// (SQLite's `BEGIN` takes DEFERRED, IMMEDIATE, EXCLUSIVE, which the node's own transaction
/// decides): savepoint statements go to SQLite.
fn is_savepoint_verb(sql: &str) -> bool {
    let upper = sql.to_ascii_uppercase();
    let mut words = upper.split_whitespace();
    words.next();
    matches!(words.next(), Some("TO"))
}

/// PostgreSQL's command tag for a statement that returns no rows.
fn command_tag(verb: &str, rows: u64) -> Tag {
    match verb {
        // INSERT's tag carries an OID, always 0.
        "INSERT" => Tag::new("INSERT").with_oid(0).with_rows(rows as usize),
        "UPDATE" | "DELETE" => Tag::new(verb).with_rows(rows as usize),
        "CREATE" | "DROP" | "ALTER" => Tag::new(verb),
        "" => Tag::new("OK"),
        other => Tag::new(other),
    }
}
