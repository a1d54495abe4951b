//! What a user's statement may do: the authorizer's policy (PRAGMAs, ATTACH, extensions,
//! temporary objects), and the transaction statements that belong to the API.

use rusqlite::hooks::{AuthAction, AuthContext};

use super::super::volume::VolumeError;
use crate::api::ErrorCode;

/// What the policy makes of one action of a statement being prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Allow,
    /// Allowed, but it changes the connection's own state: the connection serves no one else.
    Taint,
    /// Refused, and why.
    Deny(&'static str),
}

/// What a user's statement may do.
pub(super) fn policy(ctx: &AuthContext<'_>) -> Verdict {
    match ctx.action {
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => pragma_policy(&pragma_name.to_ascii_lowercase(), pragma_value.is_some()),
        // VACUUM attaches a temporary database (empty name); nothing else may be attached.
        AuthAction::Attach { filename } if !filename.is_empty() => {
            Verdict::Deny("ATTACH of another database is not available")
        }
        AuthAction::Function { function_name }
            if function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Verdict::Deny("extensions cannot be loaded")
        }
        // Temporary objects live in the connection; a temporary trigger on a table would fire
        // for whoever used the connection next.
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. } => Verdict::Taint,
        _ => Verdict::Allow,
    }
}

/// PRAGMAs: reading one changes nothing. Setting one is refused when it belongs to the storage
/// engine or would weaken durability or safety, or reach past the connection (the heap
/// limits, temp_store, threads); allowed without further ado when it is a query with an
/// argument or a setting stored in the database itself; and otherwise (a per-connection
/// setting such as foreign_keys, query_only, busy_timeout, cache_size) allowed on a connection
/// that is closed after the call.
fn pragma_policy(name: &str, with_value: bool) -> Verdict {
    const ENGINE: &[&str] = &[
        "journal_mode",
        "locking_mode",
        "page_size",
        "mmap_size",
        "temp_store_directory",
        "data_store_directory",
    ];
    const UNSAFE: &[&str] = &[
        "synchronous",
        "fullfsync",
        "checkpoint_fullfsync",
        "writable_schema",
        "schema_version",
        "hard_heap_limit",
        "soft_heap_limit",
        "temp_store",
        "threads",
    ];
    const SHARED: &[&str] = &[
        "table_info",
        "table_xinfo",
        "table_list",
        "index_info",
        "index_xinfo",
        "index_list",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
        "optimize",
        "incremental_vacuum",
        "user_version",
        "application_id",
        "auto_vacuum",
        "encoding",
    ];
    if !with_value || SHARED.contains(&name) {
        Verdict::Allow
    } else if ENGINE.contains(&name) {
        Verdict::Deny(
            "the journal mode, locking mode, page size and file mapping are the storage engine's",
        )
    } else if UNSAFE.contains(&name) {
        Verdict::Deny(
            "this setting would weaken durability or safety, or change the whole node \
             (synchronous, writable_schema, schema_version, heap limits, temp_store, threads)",
        )
    } else {
        Verdict::Taint
    }
}

/// Transactions are the API's (BeginTransaction, CommitTransaction, RollbackTransaction):
/// a statement may not begin or end one. Savepoints are fine inside a transaction. (SQLite's
/// authorizer cannot tell these apart from the BEGIN that VACUUM issues, so the statement's
/// leading words decide.)
pub(super) fn check_transaction_statement(
    sql: &str,
    in_transaction: bool,
) -> Result<(), VolumeError> {
    // `ROLLBACK [TRANSACTION] TO [SAVEPOINT] name` undoes to a savepoint, not the transaction.
    let words = leading_words(sql, 3);
    let first = words.first().map(String::as_str).unwrap_or_default();
    let savepoint_op = matches!(first, "SAVEPOINT" | "RELEASE")
        || (first == "ROLLBACK" && words.iter().any(|w| w == "TO"));
    let refused = match first {
        "BEGIN" | "COMMIT" | "END" => true,
        "ROLLBACK" | "SAVEPOINT" | "RELEASE" => !(in_transaction && savepoint_op),
        _ => false,
    };
    if refused {
        return Err(VolumeError::new(
            ErrorCode::SqlError,
            "transaction statements are not allowed here: use BeginTransaction, CommitTransaction \
             and RollbackTransaction (savepoints are allowed inside a transaction)",
        ));
    }
    Ok(())
}

/// Where the comment starting at byte `i` of `sql` ends (`-- ...` to the line's end,
/// `/* ... */` past its close); `None` when no comment starts there.
pub fn comment_end(sql: &[u8], i: usize) -> Option<usize> {
    match (sql.get(i), sql.get(i + 1)) {
        (Some(b'-'), Some(b'-')) => Some(
            sql[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(sql.len(), |n| i + n),
        ),
        (Some(b'/'), Some(b'*')) => Some(
            sql[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(sql.len(), |n| i + 2 + n + 2),
        ),
        _ => None,
    }
}

/// The first `n` words of a statement, upper-cased, skipping whitespace and comments.
pub fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() && words.len() < n {
        if let Some(end) = comment_end(bytes, i) {
            i = end;
            continue;
        }
        match bytes[i] {
            b if b.is_ascii_alphabetic() => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                words.push(sql[start..i].to_ascii_uppercase());
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ => break,
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_statements_are_recognised_through_comments_and_case() {
        assert!(check_transaction_statement("begin", false).is_err());
        assert!(check_transaction_statement("  /* x */ -- y\n Commit", true).is_err());
        assert!(check_transaction_statement("END TRANSACTION", true).is_err());
        assert!(check_transaction_statement("ROLLBACK", true).is_err());
        assert!(check_transaction_statement("SAVEPOINT a", true).is_ok());
        assert!(check_transaction_statement("ROLLBACK TO a", true).is_ok());
        assert!(check_transaction_statement("ROLLBACK TRANSACTION TO SAVEPOINT a", true).is_ok());
        assert!(check_transaction_statement("RELEASE a", true).is_ok());
        assert!(check_transaction_statement("SAVEPOINT a", false).is_err());
        assert!(check_transaction_statement("SELECT 'begin'", false).is_ok());
        assert!(check_transaction_statement("VACUUM", false).is_ok());
        assert!(check_transaction_statement("beginning_table_insert", false).is_ok());
    }
}
