//! The simple query protocol: a string of statements, run one at a time in order, stopping at
//! the first error (as PostgreSQL does). `BEGIN`, `COMMIT` and `ROLLBACK` open and end one of
//! the node's transactions, which the connection's statements then run in; savepoints work
//! inside it as SQLite's. A transaction still open when the connection ends is rolled back.
//!
//! As in PostgreSQL, an error inside a transaction aborts it: until `ROLLBACK` (or `ROLLBACK
//! TO` a savepoint) every statement gets 25P02, and `COMMIT` rolls it back. SQLite itself
//! would only have undone the failed statement, and a `COMMIT` would have kept the rest.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::sink::Sink;
use futures::stream;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, METADATA_DATABASE, METADATA_USER};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::auth::database_of;
use super::errors::{fatal, from_volume, postgres_only};
use super::extended::Parser;
use super::{split, types};
use crate::api::{ErrorCode, ExecuteRequest, ExecuteResult, Value};
use crate::engine::sql::leading_words;
use crate::engine::volume::VolumeError;
use crate::engine::Engine;

/// One connection's state: its open transaction, if any (volume, transaction id), whether an
/// error aborted it, the settings it made, and the backtrack count of its volume when it
/// started. Its engine calls block, and are made directly: the connection has a thread of its
/// own (`connection::start`).
pub(super) struct Session {
    engine: Arc<Engine>,
    parser: Arc<Parser>,
    transaction: Mutex<Option<(String, String)>>,
    aborted: Arc<AtomicBool>,
    /// Set by the parser when a statement failed to parse.
    parse_failed: Arc<AtomicBool>,
    settings: Mutex<BTreeMap<String, String>>,
    generation: Mutex<Option<u64>>,
}

impl Session {
    pub(super) fn new(engine: Arc<Engine>) -> Self {
        let parse_failed = Arc::new(AtomicBool::new(false));
        let aborted = Arc::new(AtomicBool::new(false));
        Session {
            parser: Arc::new(Parser::new(
                engine.clone(),
                aborted.clone(),
                parse_failed.clone(),
            )),
            engine,
            transaction: Mutex::new(None),
            aborted,
            parse_failed,
            settings: Mutex::new(BTreeMap::new()),
            generation: Mutex::new(None),
        }
    }

    pub(super) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub(super) fn parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// Ends the session, as PostgreSQL ends a backend, once its volume was backtracked (the
    /// state it was reading is gone) or while the backtrack switches it.
    pub(super) fn check_generation(&self, volume: &str) -> PgWireResult<()> {
        let sql = self
            .engine
            .volume(volume)
            .map_err(|e| fatal("3D000", e.message))?;
        let now = sql.volume().backtracks_applied();
        let mut seen = self.generation.lock().unwrap();
        if sql.is_switching() || seen.is_some_and(|g| g != now) {
            return Err(terminated());
        }
        *seen = Some(now);
        Ok(())
    }

    /// `SET`, `RESET`, `SHOW` and `DISCARD`: the session's settings, which SQLite has none of;
    /// drivers send them on connect. `SHOW` answers what was set, or the server's defaults.
    fn setting(&self, verb: &str, sql: &str) -> Option<Outcome> {
        let words: Vec<&str> = sql.split_whitespace().collect();
        match verb {
            "SET" => {
                let rest = sql.trim_start()[3..].trim();
                let rest = rest
                    .strip_prefix("SESSION ")
                    .or_else(|| rest.strip_prefix("LOCAL "))
                    .unwrap_or(rest);
                let (name, value) = rest
                    .split_once('=')
                    .or_else(|| rest.split_once(" TO "))
                    .or_else(|| rest.split_once(" to "))
                    .unwrap_or((rest, ""));
                let value = value.trim().trim_matches('\'').to_string();
                self.settings
                    .lock()
                    .unwrap()
                    .insert(name.trim().to_ascii_lowercase(), value);
                Some(Outcome::Done(Response::Execution(Tag::new("SET"))))
            }
            "RESET" => {
                let name = words.get(1)?.to_ascii_lowercase();
                let mut settings = self.settings.lock().unwrap();
                if name == "all" {
                    settings.clear();
                } else {
                    settings.remove(&name);
                }
                Some(Outcome::Done(Response::Execution(Tag::new("RESET"))))
            }
            "DISCARD" => {
                self.settings.lock().unwrap().clear();
                Some(Outcome::Done(Response::Execution(Tag::new("DISCARD ALL"))))
            }
            "SHOW" => {
                let name = words.get(1)?.trim_end_matches(';').to_ascii_lowercase();
                let value = self
                    .settings
                    .lock()
                    .unwrap()
                    .get(&name)
                    .cloned()
                    .or_else(|| default_setting(&name).map(str::to_string))?;
                let result = ExecuteResult {
                    columns: vec![crate::api::Column {
                        name,
                        decl_type: Some("TEXT".into()),
                    }],
                    rows: vec![vec![Value::Text(value)]],
                    rows_affected: 0,
                    last_insert_rowid: None,
                    runs: Vec::new(),
                };
                Some(Outcome::Rows(result))
            }
            _ => None,
        }
    }

    /// Runs one statement with its parameters: a transaction verb or a setting here, the rest
    /// in the node's engine. An error inside a transaction aborts it.
    pub(super) async fn run(
        &self,
        volume: &str,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Outcome, VolumeError> {
        let verb = first_word(sql);
        if self.parse_failed.swap(false, Ordering::AcqRel) {
            self.fail_transaction();
        }
        let open = self.transaction.lock().unwrap().clone();
        if let Some((volume, id)) = open.as_ref().filter(|_| self.is_aborted()) {
            match verb.as_str() {
                "COMMIT" | "END" => {
                    self.end_transaction();
                    self.engine.rollback(volume, id)?;
                    return Ok(Outcome::Done(Response::TransactionEnd(Tag::new(
                        "ROLLBACK",
                    ))));
                }
                "ROLLBACK" | "ABORT" => {}
                _ => return Ok(Outcome::Done(Response::Error(Box::new(aborted_error())))),
            }
        }
        let outcome = self.run_statement(volume, sql, &verb, params, open).await;
        if outcome.is_err() {
            self.fail_transaction();
        } else if verb == "ROLLBACK" {
            // ROLLBACK TO a savepoint: the transaction goes on from there.
            self.aborted.store(false, Ordering::Release);
        }
        outcome
    }

    pub(super) fn in_transaction(&self) -> bool {
        self.transaction.lock().unwrap().is_some()
    }

    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// An error happened: the open transaction, if any, is aborted.
    pub(super) fn fail_transaction(&self) {
        if self.transaction.lock().unwrap().is_some() {
            self.aborted.store(true, Ordering::Release);
        }
    }

    fn end_transaction(&self) {
        *self.transaction.lock().unwrap() = None;
        self.aborted.store(false, Ordering::Release);
    }

    async fn run_statement(
        &self,
        volume: &str,
        sql: &str,
        verb: &str,
        params: Vec<Value>,
        open: Option<(String, String)>,
    ) -> Result<Outcome, VolumeError> {
        match (verb, open) {
            ("BEGIN" | "START", None) if !is_savepoint_verb(sql) => {
                let id = self.engine.begin(volume)?;
                *self.transaction.lock().unwrap() = Some((volume.to_string(), id));
                Ok(Outcome::Done(Response::TransactionStart(Tag::new("BEGIN"))))
            }
            // Already in one: PostgreSQL warns and goes on.
            ("BEGIN" | "START", Some(_)) => {
                Ok(Outcome::Done(Response::TransactionStart(Tag::new("BEGIN"))))
            }
            ("COMMIT" | "END", Some((volume, id))) => {
                self.end_transaction();
                self.engine.commit(&volume, &id)?;
                Ok(Outcome::Done(Response::TransactionEnd(Tag::new("COMMIT"))))
            }
            ("ROLLBACK" | "ABORT", Some((volume, id))) if !is_savepoint_verb(sql) => {
                self.end_transaction();
                self.engine.rollback(&volume, &id)?;
                Ok(Outcome::Done(Response::TransactionEnd(Tag::new(
                    "ROLLBACK",
                ))))
            }
            ("COMMIT" | "END", None) => {
                Ok(Outcome::Done(Response::TransactionEnd(Tag::new("COMMIT"))))
            }
            ("ROLLBACK" | "ABORT", None) if !is_savepoint_verb(sql) => Ok(Outcome::Done(
                Response::TransactionEnd(Tag::new("ROLLBACK")),
            )),
            ("SET" | "RESET" | "SHOW" | "DISCARD", _) if self.setting(verb, sql).is_some() => {
                Ok(self.setting(verb, sql).expect("answered just now"))
            }
            (_, open) => {
                let request = ExecuteRequest {
                    sql: sql.to_string(),
                    params,
                    transaction_id: open.map(|(_, id)| id),
                    ..Default::default()
                };
                let result = match self.engine.execute(volume, &request) {
                    Ok(result) => result,
                    Err(e) => {
                        if e.message.contains("rolled back") {
                            // The engine ended the transaction.
                            self.end_transaction();
                        }
                        return Err(e);
                    }
                };
                if result.columns.is_empty() {
                    return Ok(Outcome::Done(Response::Execution(command_tag(
                        verb,
                        result.rows_affected,
                    ))));
                }
                Ok(Outcome::Rows(result))
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
        let volume = volume_of(&self.engine, client)?;
        self.check_generation(&volume)?;
        let mut out = Vec::new();
        for statement in split::statements(query) {
            if let Some(refused) = postgres_only(statement) {
                self.fail_transaction();
                out.push(Response::Error(Box::new(refused)));
                break;
            }
            match self.run(&volume, statement, Vec::new()).await {
                Ok(Outcome::Done(error @ Response::Error(_))) => {
                    out.push(error);
                    break;
                }
                Ok(Outcome::Done(response)) => out.push(response),
                Ok(Outcome::Rows(result)) => out.push(rows_response(&result)),
                // The volume is switching to a backtrack: this session ends.
                Err(e) if e.code == ErrorCode::Unavailable => return Err(terminated()),
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

/// The volume of the database the client connected to.
pub(super) fn volume_of<C: ClientInfo>(engine: &Engine, client: &C) -> PgWireResult<String> {
    let metadata = client.metadata();
    let database = database_of(
        metadata.get(METADATA_DATABASE).map(String::as_str),
        metadata.get(METADATA_USER).map(String::as_str),
    );
    engine
        .database(database)
        .map(|(volume, _)| volume)
        .ok_or_else(|| {
            fatal(
                "3D000",
                format!("database \"{database}\" does not exist any more"),
            )
        })
}

/// What a statement came to: a response made already, or rows to describe and send.
pub(super) enum Outcome {
    Done(Response),
    Rows(ExecuteResult),
}

/// A result with rows, typed by its columns and values, in text format.
fn rows_response(result: &ExecuteResult) -> Response {
    query_response(types::fields(&result.columns, &result.rows), result)
}

/// A result's rows, each value encoded as its field says.
pub(super) fn query_response(fields: Vec<FieldInfo>, result: &ExecuteResult) -> Response {
    let fields = Arc::new(fields);
    let mut encoder = DataRowEncoder::new(fields.clone());
    let rows: Vec<PgWireResult<_>> = result
        .rows
        .iter()
        .map(|values| types::row(&mut encoder, &fields, values))
        .collect();
    Response::Query(QueryResponse::new(fields, stream::iter(rows)))
}

/// What ends a session when its volume is backtracked: PostgreSQL's admin_shutdown.
pub(super) fn terminated() -> PgWireError {
    fatal(
        "57P01",
        "terminating connection because the database was backtracked: reconnect to see it \
         as it now is",
    )
}

/// What a statement in an aborted transaction gets.
pub(super) fn aborted_error() -> ErrorInfo {
    super::errors::error(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// What `SHOW` says of a setting nobody set.
fn default_setting(name: &str) -> Option<&'static str> {
    Some(match name {
        "server_version" => crate::engine::sql::SERVER_VERSION,
        "server_version_num" => "160006",
        "server_encoding" | "client_encoding" => "UTF8",
        "standard_conforming_strings" => "on",
        "datestyle" => "ISO, MDY",
        "timezone" => "UTC",
        "transaction_isolation" | "default_transaction_isolation" => "serializable",
        "transaction_read_only" | "default_transaction_read_only" => "off",
        "integer_datetimes" => "on",
        "search_path" => "public",
        "max_identifier_length" => "63",
        _ => return None,
    })
}

/// A statement's first word, upper-cased, after any comments.
pub(super) fn first_word(sql: &str) -> String {
    leading_words(sql, 1).pop().unwrap_or_default()
}

/// `ROLLBACK [TRANSACTION] TO [SAVEPOINT] x`: undoes to a savepoint, which is SQLite's.
pub(super) fn is_savepoint_verb(sql: &str) -> bool {
    leading_words(sql, 3).iter().skip(1).any(|w| w == "TO")
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
