//! RDS-style paging: `MaxRecords` (20..=100, default 100) and an opaque `Marker`.
//!
//! A marker is keyset paging, not an offset: it records the sort key of the last item returned,
//! so items created or deleted between pages never make another item appear twice or vanish.
//! On the wire it is base64url of a small JSON object naming the listing it belongs to, so a
//! marker from one listing is refused by another.

use base64::Engine;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub const MAX_RECORDS_DEFAULT: i64 = 100;
pub const MAX_RECORDS_MIN: i64 = 20;
pub const MAX_RECORDS_MAX: i64 = 100;

pub fn validate_max_records(value: Option<i64>) -> Result<i64, String> {
    match value {
        None => Ok(MAX_RECORDS_DEFAULT),
        Some(n) if (MAX_RECORDS_MIN..=MAX_RECORDS_MAX).contains(&n) => Ok(n),
        Some(n) => Err(format!(
            "Invalid value {n} for MaxRecords: it must be between {MAX_RECORDS_MIN} and \
             {MAX_RECORDS_MAX}."
        )),
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<K> {
    /// Which listing the marker belongs to.
    l: String,
    /// The sort key of the last item of the previous page.
    k: K,
}

pub fn encode_marker<K: Serialize>(listing: &str, key: &K) -> String {
    let json = serde_json::to_vec(&Envelope {
        l: listing.to_string(),
        k: key,
    })
    .expect("marker keys are plain data");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

pub fn decode_marker<K: DeserializeOwned>(listing: &str, marker: &str) -> Result<K, String> {
    let invalid = || format!("The marker {marker:?} is not valid for this request.");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(marker.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let envelope: Envelope<K> = serde_json::from_slice(&json).map_err(|_| invalid())?;
    if envelope.l != listing {
        return Err(invalid());
    }
    Ok(envelope.k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_belong_to_one_listing() {
        let m = encode_marker("clusters", &"abc".to_string());
        assert_eq!(decode_marker::<String>("clusters", &m).unwrap(), "abc");
        assert!(decode_marker::<String>("backtracks", &m).is_err());
        assert!(decode_marker::<String>("clusters", "not-a-marker!").is_err());
        assert!(decode_marker::<(i64, String)>("clusters", &m).is_err());
    }

    #[test]
    fn max_records_is_twenty_to_a_hundred() {
        assert_eq!(validate_max_records(None), Ok(100));
        assert_eq!(validate_max_records(Some(20)), Ok(20));
        assert!(validate_max_records(Some(19)).is_err());
        assert!(validate_max_records(Some(101)).is_err());
    }
}
