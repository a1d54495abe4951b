//! The types of a query's expression columns before it runs, for the extended protocol's
//! Describe: SQLite declares a type only for a column read straight from a table, and a
//! driver that prepares `SELECT count(*) FROM t` wants to know, before any row, that the
//! result is an integer. An expression's type follows from its form where SQLite's rules fix
//! it: `CAST(x AS T)` is T; `count()`, `length()` and the like are integers, `avg()` and
//! `total()` reals, the string functions text; a literal is its own type; a comparison is an
//! integer (0 or 1). Anything else (`sum()`, `max()`, arithmetic, `CASE`) takes the type of
//! whatever values it meets, and is described as text: CAST it to say otherwise.

use crate::api::Column;
use crate::engine::sql::comment_end;

/// Gives each expression column of `sql` (a SELECT, or a WITH ... SELECT) whose type its form
/// fixes a declared type SQLite would map to it (INTEGER, REAL, TEXT, BLOB, or a CAST's type).
pub(super) fn expression_types(sql: &str, columns: &mut [Column]) {
    if columns.iter().all(|c| c.decl_type.is_some()) {
        return;
    }
    let tokens = tokens(sql);
    let Some(items) = select_list(&tokens) else {
        return;
    };
    if items.len() != columns.len() {
        // `*` and `t.*` stand for several columns.
        return;
    }
    for (column, item) in columns.iter_mut().zip(items) {
        if column.decl_type.is_none() {
            column.decl_type = type_of(without_alias(item, &column.name)).map(str::to_string);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Word,
    Number,
    Text,
    Blob,
    Open,
    Close,
    Comma,
    Operator,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
}

impl Token<'_> {
    fn is(&self, word: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(word)
    }

    /// The identifier it names, without its quotes.
    fn name(&self) -> &str {
        self.text
            .trim_matches(|c| matches!(c, '"' | '`' | '[' | ']'))
    }
}

fn tokens(sql: &str) -> Vec<Token<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(end) = comment_end(bytes, i) {
            i = end;
            continue;
        }
        let start = i;
        let b = bytes[i];
        let kind = match b {
            _ if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'x' | b'X' if bytes.get(i + 1) == Some(&b'\'') => {
                i = quoted_end(bytes, i + 1, b'\'');
                Kind::Blob
            }
            b'\'' => {
                i = quoted_end(bytes, i, b'\'');
                Kind::Text
            }
            b'"' | b'`' => {
                i = quoted_end(bytes, i, b);
                Kind::Word
            }
            b'[' => {
                i = quoted_end(bytes, i, b']');
                Kind::Word
            }
            b'0'..=b'9' | b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) || b != b'.' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'.'
                        || (matches!(bytes[i], b'+' | b'-') && matches!(bytes[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                Kind::Number
            }
            _ if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                Kind::Word
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            _ => {
                i += 1;
                Kind::Operator
            }
        };
        out.push(Token {
            kind,
            text: &sql[start..i.min(sql.len())],
        });
    }
    out
}

/// Where a quoted text starting at `from` ends (after its closing quote; a doubled quote is
/// part of the text).
fn quoted_end(bytes: &[u8], from: usize, close: u8) -> usize {
    let mut i = from + 1;
    while i < bytes.len() {
        if bytes[i] == close {
            if close != b']' && bytes.get(i + 1) == Some(&close) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// The items of the outermost SELECT's result list.
fn select_list<'t, 'a>(tokens: &'t [Token<'a>]) -> Option<Vec<&'t [Token<'a>]>> {
    const ENDS: [&str; 11] = [
        "FROM",
        "WHERE",
        "GROUP",
        "HAVING",
        "WINDOW",
        "ORDER",
        "LIMIT",
        "UNION",
        "INTERSECT",
        "EXCEPT",
        "VALUES",
    ];
    let first = tokens.first()?;
    if !first.is("SELECT") && !first.is("WITH") {
        return None;
    }
    let mut depth = 0i32;
    let mut start = None;
    let mut items = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match token.kind {
            Kind::Open => depth += 1,
            Kind::Close => depth -= 1,
            _ => {}
        }
        if depth != 0 {
            continue;
        }
        match start {
            None if token.is("SELECT") => {
                let mut from = i + 1;
                while tokens
                    .get(from)
                    .is_some_and(|t| t.is("DISTINCT") || t.is("ALL"))
                {
                    from += 1;
                }
                start = Some(from);
            }
            Some(from) if token.kind == Kind::Comma => {
                items.push(&tokens[from..i]);
                start = Some(i + 1);
            }
            Some(from) if ENDS.iter().any(|end| token.is(end)) => {
                items.push(&tokens[from..i]);
                return Some(items);
            }
            _ => {}
        }
    }
    let from = start?;
    items.push(&tokens[from..]);
    Some(items)
}

/// An item without its alias, which SQLite names the column by.
fn without_alias<'t, 'a>(item: &'t [Token<'a>], name: &str) -> &'t [Token<'a>] {
    let [rest @ .., last] = item else {
        return item;
    };
    let aliased = last.kind == Kind::Word
        && last.name().eq_ignore_ascii_case(name)
        && rest.last().is_some_and(|before| before.text != ".");
    match rest {
        _ if !aliased => item,
        [expr @ .., as_] if as_.is("AS") => expr,
        _ => rest,
    }
}

/// The declared type an expression's form fixes, if it does.
fn type_of(expr: &[Token<'_>]) -> Option<&'static str> {
    match expr {
        [] => None,
        [one] => match one.kind {
            Kind::Number if is_real(one.text) => Some("REAL"),
            Kind::Number => Some("INTEGER"),
            Kind::Text => Some("TEXT"),
            Kind::Blob => Some("BLOB"),
            _ => None,
        },
        [sign, number] if matches!(sign.text, "-" | "+") && number.kind == Kind::Number => {
            type_of(&expr[1..])
        }
        [open, inner @ .., _] if open.kind == Kind::Open && closes(expr) => type_of(inner),
        [cast, open, inner @ .., _]
            if cast.is("CAST") && open.kind == Kind::Open && closes(&expr[1..]) =>
        {
            let at = inner.iter().rposition(|t| t.is("AS"))?;
            cast_type(&inner[at + 1..])
        }
        [function, open, ..]
            if function.kind == Kind::Word && open.kind == Kind::Open && closes(&expr[1..]) =>
        {
            function_type(&function.text.to_ascii_lowercase())
        }
        _ if is_comparison(expr) => Some("INTEGER"),
        _ => None,
    }
}

fn is_real(number: &str) -> bool {
    let lower = number.to_ascii_lowercase();
    !lower.starts_with("0x") && (lower.contains('.') || lower.contains('e'))
}

/// Whether the parenthesis `expr` starts with closes at its end.
fn closes(expr: &[Token<'_>]) -> bool {
    let mut depth = 0;
    for (i, token) in expr.iter().enumerate() {
        match token.kind {
            Kind::Open => depth += 1,
            Kind::Close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1 == expr.len();
                }
            }
            _ => {}
        }
    }
    false
}

/// A CAST's type, as one of the names `types::declared` maps.
fn cast_type(words: &[Token<'_>]) -> Option<&'static str> {
    let name = words.first()?.text.to_ascii_uppercase();
    Some(if name.starts_with("BOOL") {
        "BOOLEAN"
    } else if name.contains("INT") {
        "INTEGER"
    } else if name.contains("CHAR") || name.contains("CLOB") || name.contains("TEXT") {
        "TEXT"
    } else if name.contains("BLOB") {
        "BLOB"
    } else if name.contains("REAL") || name.contains("FLOA") || name.contains("DOUB") {
        "REAL"
    } else {
        return None;
    })
}

/// The type of what SQLite's built-in functions return, where it does not depend on their
/// arguments.
fn function_type(name: &str) -> Option<&'static str> {
    const INTEGER: &[&str] = &[
        "count",
        "length",
        "octet_length",
        "instr",
        "unicode",
        "random",
        "changes",
        "total_changes",
        "last_insert_rowid",
        "row_number",
        "rank",
        "dense_rank",
        "ntile",
        "sign",
        "json_valid",
        "json_array_length",
    ];
    const REAL: &[&str] = &[
        "avg",
        "total",
        "round",
        "percent_rank",
        "cume_dist",
        "julianday",
    ];
    const TEXT: &[&str] = &[
        "lower",
        "upper",
        "substr",
        "substring",
        "trim",
        "ltrim",
        "rtrim",
        "replace",
        "printf",
        "format",
        "quote",
        "hex",
        "typeof",
        "group_concat",
        "string_agg",
        "char",
        "concat",
        "concat_ws",
        "date",
        "time",
        "datetime",
        "strftime",
        "json",
        "json_object",
        "json_array",
        "json_group_array",
        "json_group_object",
        "json_type",
        "sqlite_version",
        "version",
        "current_database",
        "current_schema",
        "soundex",
    ];
    const BLOB: &[&str] = &["randomblob", "zeroblob", "unhex", "jsonb"];
    [
        (INTEGER, "INTEGER"),
        (REAL, "REAL"),
        (TEXT, "TEXT"),
        (BLOB, "BLOB"),
    ]
    .iter()
    .find(|(names, _)| names.contains(&name))
    .map(|(_, decl)| *decl)
}

/// A comparison at the top level: SQLite's result is 0, 1 or NULL.
fn is_comparison(expr: &[Token<'_>]) -> bool {
    const WORDS: [&str; 9] = [
        "IS", "IN", "LIKE", "GLOB", "BETWEEN", "EXISTS", "AND", "OR", "NOT",
    ];
    let mut depth = 0;
    expr.iter().any(|t| {
        match t.kind {
            Kind::Open => depth += 1,
            Kind::Close => depth -= 1,
            _ => {}
        }
        depth == 0
            && ((t.kind == Kind::Operator && matches!(t.text, "=" | "<" | ">" | "!"))
                || WORDS.iter().any(|w| t.is(w)))
    })
}

#[cfg(test)]
mod tests {
    use super::expression_types;
    use crate::api::Column;

    fn inferred(sql: &str, names: &[&str]) -> Vec<Option<String>> {
        let mut columns: Vec<Column> = names
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                decl_type: None,
            })
            .collect();
        expression_types(sql, &mut columns);
        columns.into_iter().map(|c| c.decl_type).collect()
    }

    fn some(types: &[&str]) -> Vec<Option<String>> {
        types
            .iter()
            .map(|t| (!t.is_empty()).then(|| t.to_string()))
            .collect()
    }

    #[test]
    fn an_expressions_form_gives_its_type_where_sqlite_fixes_it() {
        assert_eq!(
            inferred(
                "SELECT count(*), avg(x) AS mean, upper(name) n, 1, -2.5, 'a', x'00', a = b, \
                 CAST(s AS BOOLEAN), sum(x), max(x) + 1 FROM t WHERE a > 1",
                &[
                    "count(*)",
                    "mean",
                    "n",
                    "1",
                    "-2.5",
                    "'a'",
                    "x'00'",
                    "a = b",
                    "CAST(s AS BOOLEAN)",
                    "sum(x)",
                    "max(x) + 1"
                ]
            ),
            some(&[
                "INTEGER", "REAL", "TEXT", "INTEGER", "REAL", "TEXT", "BLOB", "INTEGER", "BOOLEAN",
                "", ""
            ])
        );
        assert_eq!(
            inferred(
                "WITH c(n) AS (SELECT 1) SELECT DISTINCT (count(*)), 'x,y' /* , */ FROM c",
                &["(count(*))", "'x,y'"]
            ),
            some(&["INTEGER", "TEXT"])
        );
        // `*` stands for columns the list does not show.
        assert_eq!(
            inferred("SELECT *, 1 FROM t", &["a", "b", "1"]),
            some(&["", "", ""])
        );
        assert_eq!(inferred("INSERT INTO t VALUES (1)", &[]), some(&[]));
    }
}
