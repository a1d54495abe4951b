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
