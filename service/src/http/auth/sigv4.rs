//! AWS Signature Version 4, the verifying side: the canonical request, the string to sign,
//! the signing key and the signature, as AWS specifies them for services other than S3
//! (the path normalized, then URI-encoded as sent; the query sorted; header values trimmed
//! and their inner runs of spaces collapsed). Checked against AWS's aws-sig-v4-test-suite
//! vectors below and against requests botocore and the JS SDK sign (tests/api, .ci).
//!
//! No crate verifies SigV4 on its own: `aws-sigv4` signs requests it builds itself (its own
//! choice of headers and encodings, not the client's), and s3s's verifier is S3's variant
//! inside an S3 server. So the canonical form lives here, over the RustCrypto `hmac` and
//! `sha2` crates that sqlx already builds.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

type HmacSha256 = Hmac<Sha256>;

/// What a signature covers, taken from the request as it arrived.
#[derive(Debug)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded once by the client).
    pub path: &'a str,
    /// The raw query string, without the presigned `X-Amz-Signature`.
    pub query: &'a str,
    /// Every header of the request, names in any case.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The lower-case names of the headers the client signed, in its order.
    pub signed_headers: Vec<&'a str>,
    /// Hex SHA-256 of the body (or the client's `x-amz-content-sha256`).
    pub payload_hash: String,
}

/// The credential scope: `DATE/REGION/SERVICE/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub date: String,
    pub region: String,
    pub service: String,
}

impl Scope {
    pub fn text(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The canonical request of AWS's specification.
pub fn canonical_request(signed: &Signed<'_>) -> String {
    let mut headers = String::new();
    for name in &signed.signed_headers {
        let values: Vec<String> = signed
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| collapse_spaces(v))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{}\n{}\n{}\n{headers}\n{}\n{}",
        signed.method.to_ascii_uppercase(),
        canonical_uri(signed.path),
        canonical_query(signed.query),
        signed.signed_headers.join(";"),
        signed.payload_hash
    )
}

/// The string to sign for a canonical request made at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn string_to_sign(amz_date: &str, scope: &Scope, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        scope.text(),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The signing key, derived from the secret and the scope.
pub fn signing_key(secret: &str, scope: &Scope) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes());
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// The signature, in hex.
pub fn signature(secret: &str, scope: &Scope, string_to_sign: &str) -> String {
    hex::encode(hmac(&signing_key(secret, scope), string_to_sign.as_bytes()))
}

/// Whether `claimed` (hex) is the signature; compared in constant time.
pub fn verify(secret: &str, scope: &Scope, string_to_sign: &str, claimed: &str) -> bool {
    let Ok(claimed) = hex::decode(claimed) else {
        return false;
    };
    let mut mac =
        HmacSha256::new_from_slice(&signing_key(secret, scope)).expect("HMAC takes any key");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&claimed).is_ok()
}

/// Trims a header value and collapses its runs of spaces to one.
fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// RFC 3986 encoding with AWS's unreserved set (`A-Z a-z 0-9 - _ . ~`); `/` kept when
/// `keep_slash`.
fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path with `.` and `..` segments resolved and empty segments dropped, then encoded
/// (so what the client encoded once is encoded again, as AWS's non-S3 services do).
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = path.len() > 1 && path.ends_with('/') && !segments.is_empty();
    let mut normalized = format!("/{}", segments.join("/"));
    if trailing {
        normalized.push('/');
    }
    uri_encode(normalized.as_bytes(), true)
}

/// The query's parameters decoded, encoded again, and sorted by name, then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
            (
                uri_encode(&decode(name), false),
                uri_encode(&decode(value), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    // aws-sig-v4-test-suite (2015-08-30): its credentials, scope and time.
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn scope() -> Scope {
        Scope {
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "service".into(),
        }
    }

    /// Signs like the suite: host and x-amz-date plus `extra`, all of them signed.
    fn sign(method: &str, path: &str, query: &str, extra: &[(&str, &str)], body: &str) -> String {
        let mut headers = vec![("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)];
        headers.extend_from_slice(extra);
        let mut names: Vec<String> = headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        let signed = Signed {
            method,
            path,
            query,
            headers,
            signed_headers: names.iter().map(String::as_str).collect(),
            payload_hash: sha256_hex(body.as_bytes()),
        };
        let string_to_sign = string_to_sign(DATE, &scope(), &canonical_request(&signed));
        signature(SECRET, &scope(), &string_to_sign)
    }

    #[test]
    fn get_vanilla_canonical_request_and_string_to_sign() {
        let signed = Signed {
            method: "GET",
            path: "/",
            query: "",
            headers: vec![("Host", "example.amazonaws.com"), ("X-Amz-Date", DATE)],
            signed_headers: vec!["host", "x-amz-date"],
            payload_hash: EMPTY.into(),
        };
        let creq = canonical_request(&signed);
        assert_eq!(
            creq,
            format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:{DATE}\n\nhost;x-amz-date\n{EMPTY}")
        );
        assert_eq!(
            string_to_sign(DATE, &scope(), &creq),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
    }

    #[test]
    fn the_test_suites_signatures() {
        let cases: &[(&str, String, &str)] = &[
            ("get-vanilla", sign("GET", "/", "", &[], ""), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
            ("get-vanilla-query-order-key-case", sign("GET", "/", "Param2=value2&Param1=value1", &[], ""), "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
            ("get-vanilla-empty-query-key", sign("GET", "/", "Param1=value1", &[], ""), "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
            ("get-vanilla-query-unreserved", sign("GET", "/", "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", &[], ""), "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
            ("get-vanilla-utf8-query", sign("GET", "/", "%E1%88%B4=bar", &[], ""), "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
            ("get-unreserved", sign("GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "", &[], ""), "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
            ("get-utf8", sign("GET", "/ሴ", "", &[], ""), "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
            ("get-header-key-duplicate", sign("GET", "/", "", &[("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")], ""), "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
            ("get-header-value-order", sign("GET", "/", "", &[("My-Header1", "value4"), ("My-Header1", "value1"), ("My-Header1", "value3"), ("My-Header1", "value2")], ""), "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"),
            ("get-header-value-trim", sign("GET", "/", "", &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")], ""), "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
            ("post-vanilla", sign("POST", "/", "", &[], ""), "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
            ("post-vanilla-query", sign("POST", "/", "Param1=value1", &[], ""), "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
            ("post-vanilla-query-nonunreserved", sign("POST", "/", "@#$%25^=&%2B=/,?><`\";:\\|][{}", &[], ""), "66c82657c86e26fb25238d0e69f011edc4c6df5ae71119d7cb98ed9b87393c1e"),
            ("post-vanilla-query-space", sign("POST", "/", "p=", &[], ""), "e71688addb58a26418614085fb730ba3faa623b461c17f48f2fbdb9361b94a9b"),
            ("post-header-key-case", sign("POST", "/", "", &[], ""), "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
            ("post-header-key-sort", sign("POST", "/", "", &[("My-Header1", "value1")], ""), "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"),
            ("post-header-value-case", sign("POST", "/", "", &[("My-Header1", "VALUE1")], ""), "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"),
            ("post-x-www-form-urlencoded", sign("POST", "/", "", &[("Content-Type", "application/x-www-form-urlencoded")], "Param1=value1"), "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
            ("post-x-www-form-urlencoded-parameters", sign("POST", "/", "", &[("Content-Type", "application/x-www-form-urlencoded; charset=utf8")], "Param1=value1"), "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe"),
            ("normalize-path/get-relative-relative", sign("GET", "/example1/example2/../..", "", &[], ""), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
            ("normalize-path/get-slashes", sign("GET", "//", "", &[], ""), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
            ("normalize-path/get-slash-dot-slash", sign("GET", "/./", "", &[], ""), "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn verification_is_exact_and_refuses_garbage() {
        let sts = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63";
        let good = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        assert!(verify(SECRET, &scope(), sts, good));
        assert!(!verify(SECRET, &scope(), sts, &good.replace('5', "6")));
        assert!(!verify(SECRET, &scope(), sts, "not hex"));
        assert!(!verify(SECRET, &scope(), sts, &good[..62]));
        assert!(!verify("another secret", &scope(), sts, good));
        let other_region = Scope {
            region: "eu-west-1".into(),
            ..scope()
        };
        assert!(!verify(SECRET, &other_region, sts, good));
    }
}
