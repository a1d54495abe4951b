//! The extended query protocol (what psycopg, node-postgres, JDBC and sqlx use): Parse
//! prepares a statement on the volume (its `$n` parameters become SQLite's `?n`), Describe
//! answers its parameters and its columns' declared types (an expression's from its form, see
//! `infer`; TEXT where only its values know), Bind takes values in text or binary, Execute
//! runs it through the same path as a simple query.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::sink::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{FieldFormat, FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::errors::from_volume;
use super::query::{
    aborted_error, first_word, is_savepoint_verb, query_response, terminated, volume_of, Outcome,
    Session,
};
use super::{infer, types};
use crate::api::{Column, ErrorCode, Value};
use crate::engine::sql::{comment_end, leading_words, Described};
use crate::engine::Engine;

/// A parsed statement: SQLite's text and its shape.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    sql: String,
    described: Described,
}

pub(super) struct Parser {
    engine: Arc<Engine>,
    /// The session's transaction is aborted: only its end is parsed.
    aborted: Arc<AtomicBool>,
    /// Set when a statement fails to parse: the session's transaction, if one is open, is
    /// then aborted as by any other error.
    failed: Arc<AtomicBool>,
}

impl Parser {
    pub(super) fn new(
        engine: Arc<Engine>,
        aborted: Arc<AtomicBool>,
        failed: Arc<AtomicBool>,
    ) -> Self {
        Parser {
            engine,
            aborted,
            failed,
        }
    }
}

fn user_error(info: ErrorInfo) -> PgWireError {
    PgWireError::UserError(Box::new(info))
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let parsed = self.parse(client, sql).await;
        if parsed.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        parsed
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(vec![Type::UNKNOWN; stmt.described.params])
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(types::declared_fields(&stmt.described.columns, format))
    }
}

impl Parser {
    async fn parse<C: ClientInfo>(&self, client: &C, sql: &str) -> PgWireResult<Option<Prepared>> {
        let volume = volume_of(&self.engine, client)?;
        let verb = first_word(sql);
        if self.aborted.load(Ordering::Acquire)
            && !matches!(verb.as_str(), "ROLLBACK" | "ABORT" | "COMMIT" | "END")
        {
            return Err(user_error(aborted_error()));
        }
        if let Some(refused) = super::errors::postgres_only(sql) {
            return Err(user_error(refused));
        }
        let sql = numbered(sql.trim().trim_end_matches(';'));
        if let Some(described) = Session::described_here(&sql) {
            return Ok(Some(Prepared { sql, described }));
        }
        let mut described = self
            .engine
            .describe(&volume, &sql)
            .map_err(|e| user_error(from_volume(&e)))?;
        infer::expression_types(&sql, &mut described.columns);
        Ok(Some(Prepared { sql, described }))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let volume = volume_of(self.engine(), client)?;
        self.check_generation(&volume)?;
        let prepared = &portal.statement.statement;
        let params = parameters(portal).inspect_err(|_| self.fail_transaction())?;
        match self.run(&volume, &prepared.sql, params).await {
            Ok(Outcome::Done(Response::Error(e))) => Err(PgWireError::UserError(e)),
            Ok(Outcome::Done(response)) => Ok(response),
            Ok(Outcome::Rows(result)) => {
                // Rows as the Describe before said they would be.
                let fields = types::declared_fields(
                    &prepared.described.columns,
                    Some(&portal.result_column_format),
                );
                Ok(query_response(fields, &result))
            }
            Err(e) if e.code == ErrorCode::Unavailable => Err(terminated()),
            Err(e) => Err(user_error(from_volume(&e))),
        }
    }
}

impl Session {
    /// The shape of a statement this module answers itself (see `Session::run`).
    fn described_here(sql: &str) -> Option<Described> {
        let words = leading_words(sql, 2);
        let verb = words.first().cloned().unwrap_or_default();
        let columns = match verb.as_str() {
            "SHOW" => vec![Column {
                name: words
                    .get(1)
                    .map_or("setting".into(), |w| w.to_ascii_lowercase()),
                decl_type: Some("TEXT".into()),
            }],
            "SET" | "RESET" | "DISCARD" | "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK"
            | "ABORT" => Vec::new(),
            _ => return None,
        };
        if verb == "ROLLBACK" && is_savepoint_verb(sql) {
            return None;
        }
        Some(Described {
            params: 0,
            columns,
            readonly: true,
        })
    }
}

/// `$1`, `$2`, ... outside quotes and comments, as SQLite's `?1`, `?2`, ...
fn numbered(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' || b == b'`' => quote = Some(b),
            None if comment_end(bytes, i).is_some() => {
                let end = comment_end(bytes, i).expect("a comment starts here");
                out.push_str(&sql[i..end]);
                i = end;
                continue;
            }
            None if b == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push('?');
                i += 1;
                continue;
            }
            None => {}
        }
        let ch = sql[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The portal's parameters as SQLite values: by their declared type when the client gave
/// one, in text or binary; text for the rest (SQLite converts by column affinity).
fn parameters(portal: &Portal<Prepared>) -> PgWireResult<Vec<Value>> {
    let types = &portal.statement.parameter_types;
    (0..portal.parameter_len())
        .map(|i| {
            let pg_type = types.get(i).cloned().flatten().unwrap_or(Type::UNKNOWN);
            let binary = portal.parameter_format.format_for(i) == FieldFormat::Binary;
            match &portal.parameters[i] {
                None => Ok(Value::Null(true)),
                Some(bytes) if binary => from_binary(&pg_type, bytes),
                Some(bytes) => from_text(&pg_type, bytes),
            }
        })
        .collect()
}

fn bad_parameter(pg_type: &Type, why: &str) -> PgWireError {
    user_error(ErrorInfo::new(
        "ERROR".into(),
        "22P02".into(),
        format!(
            "invalid input for a parameter of type {}: {why}",
            pg_type.name()
        ),
    ))
}

fn from_text(pg_type: &Type, bytes: &[u8]) -> PgWireResult<Value> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad_parameter(pg_type, "not UTF-8"))?;
    Ok(match *pg_type {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => Value::Integer(
            text.trim()
                .parse()
                .map_err(|_| bad_parameter(pg_type, text))?,
        ),
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => Value::Real(
            text.trim()
                .parse()
                .map_err(|_| bad_parameter(pg_type, text))?,
        ),
        Type::BOOL => Value::Integer(match text.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "1" | "on" | "yes" | "y" => 1,
            "f" | "false" | "0" | "off" | "no" | "n" => 0,
            _ => return Err(bad_parameter(pg_type, text)),
        }),
        Type::BYTEA => Value::Blob(match text.strip_prefix("\\x") {
            Some(hex) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<Result<_, _>>()
                .map_err(|_| bad_parameter(pg_type, "not \\x hex"))?,
            None => text.as_bytes().to_vec(),
        }),
        _ => Value::Text(text.to_string()),
    })
}

fn from_binary(pg_type: &Type, bytes: &[u8]) -> PgWireResult<Value> {
    let fixed = |n: usize| -> PgWireResult<&[u8]> {
        (bytes.len() == n)
            .then_some(bytes)
            .ok_or_else(|| bad_parameter(pg_type, "wrong length"))
    };
    Ok(match *pg_type {
        Type::BOOL => Value::Integer(i64::from(fixed(1)?[0] != 0)),
        Type::INT2 => Value::Integer(i64::from(i16::from_be_bytes(
            fixed(2)?.try_into().expect("2 bytes"),
        ))),
        Type::INT4 => Value::Integer(i64::from(i32::from_be_bytes(
            fixed(4)?.try_into().expect("4 bytes"),
        ))),
        Type::INT8 => Value::Integer(i64::from_be_bytes(fixed(8)?.try_into().expect("8 bytes"))),
        Type::FLOAT4 => Value::Real(f64::from(f32::from_be_bytes(
            fixed(4)?.try_into().expect("4 bytes"),
        ))),
        Type::FLOAT8 => Value::Real(f64::from_be_bytes(fixed(8)?.try_into().expect("8 bytes"))),
        Type::BYTEA => Value::Blob(bytes.to_vec()),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
            Value::Text(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| bad_parameter(pg_type, "not UTF-8"))?,
            )
        }
        _ => {
            return Err(user_error(ErrorInfo::new(
                "ERROR".into(),
                "0A000".into(),
                format!(
                    "a parameter of type {} cannot be sent in binary to this database (SQLite's \
                     dialect); send it as text",
                    pg_type.name()
                ),
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn dollar_parameters_become_sqlites_outside_quotes() {
        assert_eq!(
            numbered("SELECT $1, '$2', \"$3\" FROM t WHERE a = $2 -- $4\nAND b = $10"),
            "SELECT ?1, '$2', \"$3\" FROM t WHERE a = ?2 -- $4\nAND b = ?10"
        );
        assert_eq!(numbered("SELECT 'é' || $1"), "SELECT 'é' || ?1");
    }
}
