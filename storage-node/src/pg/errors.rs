//! The engine's refusals as PostgreSQL errors: the SQLSTATE a driver expects, and the
//! engine's message (which names SQLite's dialect where that is the reason).

use pgwire::api::{ClientInfo, ErrorHandler, METADATA_USER};
use pgwire::error::{ErrorInfo, PgWireError};

use crate::api::ErrorCode;
use crate::engine::volume::VolumeError;

/// Says failed logins as PostgreSQL does, naming the user the client connected as.
pub(super) struct Wording;

impl ErrorHandler for Wording {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        if let PgWireError::InvalidPassword(_) = error {
            let user = client
                .metadata()
                .get(METADATA_USER)
                .cloned()
                .unwrap_or_default();
            *error = fatal(
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            );
        }
    }
}

pub(super) fn error(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), code.to_string(), message.into())
}

/// An error that ends the connection (at startup).
pub(super) fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// PostgreSQL statements SQLite has no counterpart for: a clear 0A000 naming the dialect,
/// rather than SQLite's syntax error.
pub(super) fn postgres_only(sql: &str) -> Option<ErrorInfo> {
    const VERBS: [&str; 24] = [
        "COPY",
        "LISTEN",
        "NOTIFY",
        "UNLISTEN",
        "GRANT",
        "REVOKE",
        "TRUNCATE",
        "LOCK",
        "CLUSTER",
        "DO",
        "CALL",
        "FETCH",
        "MOVE",
        "DECLARE",
        "CLOSE",
        "DEALLOCATE",
        "PREPARE",
        "EXECUTE",
        "COMMENT",
        "SECURITY",
        "REFRESH",
        "IMPORT",
        "CHECKPOINT",
        "REASSIGN",
    ];
    const OBJECTS: [&str; 20] = [
        "EXTENSION",
        "SCHEMA",
        "ROLE",
        "USER",
        "DATABASE",
        "FUNCTION",
        "PROCEDURE",
        "SEQUENCE",
        "TYPE",
        "DOMAIN",
        "POLICY",
        "PUBLICATION",
        "SUBSCRIPTION",
        "MATERIALIZED",
        "AGGREGATE",
        "OPERATOR",
        "RULE",
        "TABLESPACE",
        "LANGUAGE",
        "SERVER",
    ];
    let words = crate::engine::sql::leading_words(sql, 2);
    let first = words.first()?.as_str();
    let what = if VERBS.contains(&first) {
        first.to_string()
    } else {
        let second = words.get(1).filter(|w| OBJECTS.contains(&w.as_str()))?;
        matches!(first, "CREATE" | "ALTER" | "DROP").then(|| format!("{first} {second}"))?
    };
    Some(error(
        "0A000",
        format!(
            "{what} is a PostgreSQL statement; this database runs SQLite's SQL dialect \
             (https://sqlite.org/lang.html), which has no {what}"
        ),
    ))
}

/// The SQLSTATE of an engine error.
pub(super) fn from_volume(e: &VolumeError) -> ErrorInfo {
    let code = match e.code {
        ErrorCode::SqlError => sqlite_state(&e.message),
        ErrorCode::StatementTimeout => "57014",
        ErrorCode::StorageFull => "53100",
        ErrorCode::Unavailable => "57P03",
        ErrorCode::TransactionNotFound => "25P01",
        ErrorCode::InvalidRequest => "22023",
        ErrorCode::VolumeNotFound => "3D000",
        _ => "XX000",
    };
    error(code, e.message.clone())
}

/// SQLite reports errors as text; the common ones have a PostgreSQL class.
fn sqlite_state(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    let table = [
        ("unique constraint failed", "23505"),
        ("primary key", "23505"),
        ("not null constraint failed", "23502"),
        ("foreign key constraint failed", "23503"),
        ("check constraint failed", "23514"),
        ("no such table", "42P01"),
        ("no such column", "42703"),
        ("already exists", "42P07"),
        ("syntax error", "42601"),
        ("incomplete input", "42601"),
        ("not authorized", "42501"),
        ("is not allowed", "42501"),
        ("pragma", "42501"),
        ("readonly", "25006"),
        ("datatype mismatch", "42804"),
        ("too big", "54000"),
        ("out of memory", "53200"),
    ];
    table
        .iter()
        .find(|(needle, _)| m.contains(needle))
        .map_or("42000", |(_, code)| code)
}
