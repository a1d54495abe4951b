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

/// What a listing was asked for: a page size and where the page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<K> {
    /// Names the listing in the markers it hands out.
    listing: &'static str,
    pub limit: i64,
    /// The sort key of the last item of the previous page.
    pub after: Option<K>,
}

/// A page of items, and the marker of the next page when more follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub marker: Option<String>,
}

impl<K: Serialize + DeserializeOwned> Page<K> {
    /// The page `MaxRecords` and `Marker` ask for, as the caller sent them.
    pub fn parse(
        listing: &'static str,
        max_records: Option<&str>,
        marker: Option<&str>,
    ) -> Result<Self, String> {
        let max_records = max_records
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| format!("MaxRecords must be an integer, not {v:?}."))
            })
            .transpose()?;
        Ok(Page {
            listing,
            limit: validate_max_records(max_records)?,
            after: marker.map(|m| decode_marker(listing, m)).transpose()?,
        })
    }

    /// How many items to fetch: one more than a page, to learn whether another follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The page out of what was fetched, with a marker (the last item's key) when the extra
    /// item shows more follow.
    pub fn finish<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> K) -> Paged<T> {
        let marker = if items.len() as i64 > self.limit {
            items.truncate(self.limit as usize);
            items
                .last()
                .map(|last| encode_marker(self.listing, &key(last)))
        } else {
            None
        };
        Paged { items, marker }
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
    fn a_page_hands_out_a_marker_only_when_more_follow() {
        let page = Page::<i64>::parse("numbers", Some("20"), None).unwrap();
        assert_eq!(page.fetch(), 21);
        let full = page.finish((0..21).collect(), |n| *n);
        assert_eq!(full.items.len(), 20);
        let next = Page::<i64>::parse("numbers", None, full.marker.as_deref()).unwrap();
        assert_eq!(next.after, Some(19));
        assert_eq!(page.finish((0..20).collect(), |n| *n).marker, None);
        assert!(Page::<i64>::parse("numbers", Some("x"), None).is_err());
        assert!(Page::<i64>::parse("numbers", Some("19"), None).is_err());
        assert!(Page::<i64>::parse("other", None, full.marker.as_deref()).is_err());
    }

    #[test]
    fn max_records_is_twenty_to_a_hundred() {
        assert_eq!(validate_max_records(None), Ok(100));
        assert_eq!(validate_max_records(Some(20)), Ok(20));
        assert!(validate_max_records(Some(19)).is_err());
        assert!(validate_max_records(Some(101)).is_err());
    }
}
