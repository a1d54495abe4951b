//! The rules of the values a request brings: backtrack windows, engines, master users and
//! passwords, tags. Each returns RDS's wording of what is wrong.

use backtrack_storage_node::api::MAX_WINDOW_SECS;

use super::Tag;

/// Validates a target backtrack window in seconds.
pub fn validate_window(window: i64) -> Result<u64, String> {
    if (0..=MAX_WINDOW_SECS as i64).contains(&window) {
        Ok(window as u64)
    } else {
        Err(format!(
            "The specified value ({window}) is not a valid Backtrack Window. Allowed values are \
             within the range of 0 to {MAX_WINDOW_SECS}"
        ))
    }
}

/// The default engine name: Aurora MySQL's, so RDS tooling accepts the clusters; the SQL
/// dialect underneath is SQLite's.
pub const ENGINE: &str = "aurora-mysql";
/// The engine names a cluster may be created with: what RDS tooling sees. Every cluster runs
/// the same engine (`ENGINE_VERSION` says which), with a backtrack window whatever the name
/// (Aurora cannot backtrack its PostgreSQL clusters; these can).
pub const ENGINES: [&str; 3] = [ENGINE, "aurora-postgresql", "postgres"];
pub const ENGINE_VERSION: &str = "sqlite-3.46.0";
pub const ENGINE_MODE: &str = "provisioned";

/// Checks a requested engine, version and mode against the one Backtrack runs, and returns the
/// engine's name.
pub fn validate_engine(
    engine: Option<&str>,
    version: Option<&str>,
    mode: Option<&str>,
) -> Result<String, String> {
    let engine = engine.unwrap_or(ENGINE);
    if !ENGINES.contains(&engine) {
        return Err(format!(
            "The engine {engine} is not offered: clusters are {} (every one runs SQLite's SQL \
             dialect, reached over the Data API and the PostgreSQL protocol).",
            ENGINES.join(", ")
        ));
    }
    if let Some(version) = version.filter(|v| *v != ENGINE_VERSION) {
        return Err(format!(
            "Cannot find version {version} for {engine}; the available version is {ENGINE_VERSION}."
        ));
    }
    if let Some(mode) = mode.filter(|m| *m != ENGINE_MODE) {
        return Err(format!(
            "The engine mode {mode} is not supported; use {ENGINE_MODE}."
        ));
    }
    Ok(engine.to_string())
}

/// A master user name: 1 to 63 letters, digits and underscores, a letter first (PostgreSQL's
/// identifier rules, which every driver accepts unquoted).
pub fn validate_master_username(name: &str) -> Result<(), String> {
    let valid = (1..=63).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "The parameter MasterUsername is not valid: {name:?}. It must be 1 to 63 letters, \
             digits and underscores, beginning with a letter."
        ))
    }
}

/// A master password, as RDS takes them: 8 to 128 printable ASCII characters other than `/`,
/// `'`, `"`, `@` and space. (Printable ASCII is also what SCRAM's SASLprep leaves as it is, so
/// every client derives the same key from it.)
pub fn validate_master_password(password: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_graphic() && !matches!(b, b'/' | b'\'' | b'"' | b'@');
    if (8..=128).contains(&password.len()) && password.bytes().all(allowed) {
        Ok(())
    } else {
        Err(
            "The parameter MasterUserPassword is not a valid password. It must be 8 to 128 \
             printable ASCII characters other than /, ', \", @ and space."
                .into(),
        )
    }
}

/// Checks tags as RDS does: keys of 1-128 characters, values of at most 256.
pub fn validate_tags(tags: &[Tag]) -> Result<(), String> {
    match tags
        .iter()
        .find(|t| t.key.is_empty() || t.key.len() > 128 || t.value.len() > 256)
    {
        Some(tag) => Err(format!(
            "Invalid tag {:?}: keys are 1-128 characters and values at most 256.",
            tag.key
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_zero_to_seventy_two_hours() {
        assert_eq!(validate_window(0), Ok(0));
        assert_eq!(validate_window(259_200), Ok(259_200));
        assert!(validate_window(-1).unwrap_err().contains("(-1)"));
        assert!(validate_window(259_201).is_err());
    }

    #[test]
    fn one_engine_version_and_mode_are_accepted() {
        assert_eq!(validate_engine(None, None, None).unwrap(), ENGINE);
        assert!(validate_engine(Some("mysql"), None, None).is_err());
        for engine in ENGINES {
            assert_eq!(validate_engine(Some(engine), None, None).unwrap(), engine);
        }
        assert!(validate_engine(None, Some("8.0"), None).is_err());
        assert!(validate_engine(None, None, Some("serverless")).is_err());
        let tag = |k: &str| Tag {
            key: k.into(),
            value: String::new(),
        };
        assert!(validate_tags(&[tag("team")]).is_ok());
        assert!(validate_master_username("admin_1").is_ok());
        for bad in ["", "1admin", "ad-min", &"a".repeat(64)] {
            assert!(validate_master_username(bad).is_err(), "{bad:?}");
        }
        assert!(validate_master_password("correct-Horse_9").is_ok());
        for bad in [
            "short",
            "has space",
            "has/slash",
            "has@at",
            "quo\"te",
            "caf\u{e9}-latte",
        ] {
            assert!(validate_master_password(bad).is_err(), "{bad:?}");
        }
        assert!(validate_tags(&[tag("")]).is_err());
        assert!(validate_tags(&[tag(&"k".repeat(129))]).is_err());
    }
}
