//! A simple query's text as its statements: split at the semicolons that end one, not those
//! inside quotes, comments or a trigger's body (`CREATE TRIGGER ... BEGIN ...; END`).

use crate::engine::sql::comment_end;

/// The statements of `sql`, trimmed, empty ones left out.
pub(super) fn statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    // Inside CREATE TRIGGER's BEGIN ... END.
    let mut depth = 0usize;
    while i < bytes.len() {
        if let Some(end) = comment_end(bytes, i) {
            i = end;
            continue;
        }
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == quote {
                        // A doubled quote is one quote character.
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'[' => {
                while i < bytes.len() && bytes[i] != b']' {
                    i += 1;
                }
            }
            b';' if depth == 0 => {
                push(&mut out, &sql[start..i]);
                start = i + 1;
            }
            c if c.is_ascii_alphabetic() => {
                let word_start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &sql[word_start..i];
                if word.eq_ignore_ascii_case("BEGIN") && is_trigger(&sql[start..word_start]) {
                    depth += 1;
                } else if word.eq_ignore_ascii_case("CASE") && depth > 0 {
                    // CASE ... END inside the body closes itself.
                    depth += 1;
                } else if word.eq_ignore_ascii_case("END") && depth > 0 {
                    depth -= 1;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    push(&mut out, &sql[start..]);
    out
}

fn push<'a>(out: &mut Vec<&'a str>, statement: &'a str) {
    let statement = statement.trim();
    if !statement.is_empty() {
        out.push(statement);
    }
}

/// Whether the statement so far is a CREATE [TEMP] TRIGGER.
fn is_trigger(head: &str) -> bool {
    let words = crate::engine::sql::leading_words(head, 3);
    words.first().is_some_and(|w| w == "CREATE") && words[1..].iter().any(|w| w == "TRIGGER")
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn statements_split_at_their_own_semicolons_only() {
        assert_eq!(statements("SELECT 1; SELECT 2;"), ["SELECT 1", "SELECT 2"]);
        assert_eq!(statements(" ; ;"), Vec::<&str>::new());
        assert_eq!(
            statements("INSERT INTO t VALUES ('a;b', \"c;\"\"d\"); -- x; y\nSELECT 3 /* ; */"),
            [
                "INSERT INTO t VALUES ('a;b', \"c;\"\"d\")",
                "-- x; y\nSELECT 3 /* ; */"
            ]
        );
        let trigger = "CREATE TRIGGER m AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1); \
                       UPDATE c SET n = n + 1; END";
        assert_eq!(
            statements(&format!("{trigger}; SELECT 1")),
            [trigger, "SELECT 1"]
        );
        let with_case = "CREATE TRIGGER m AFTER INSERT ON a BEGIN UPDATE c SET n = CASE WHEN \
                         n > 0 THEN 1 ELSE 0 END; END";
        assert_eq!(
            statements(&format!("{with_case}; SELECT 1")),
            [with_case, "SELECT 1"]
        );
        assert_eq!(
            statements("BEGIN; SELECT 1; END"),
            ["BEGIN", "SELECT 1", "END"]
        );
    }
}
