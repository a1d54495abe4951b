//! Who may call: with access keys configured, every API request must carry an AWS
//! Signature Version 4 by one of them (the `Authorization` header, or a presigned query
//! string), scoped to this service's region and to `rds` (`rds-data` for the Data API),
//! made within 15 minutes of now, over the body as it arrived. The health checks, the
//! OpenAPI document and its docs page stay open, and `/metrics` unless `--metrics-auth`.
//!
//! A refusal is an [`ApiError`] (MissingAuthenticationToken, InvalidClientTokenId,
//! SignatureDoesNotMatch, IncompleteSignature), so each front door writes it in its own
//! error format.

pub mod sigv4;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use self::sigv4::{Scope, Signed, ALGORITHM};
use crate::error::ApiError;

/// How far a request's time may be from the service's clock.
pub const MAX_SKEW: SignedDuration = SignedDuration::from_mins(15);
/// The longest a presigned request may stay valid (a week, as AWS allows).
pub const MAX_EXPIRES_SECS: i64 = 7 * 24 * 3600;

/// The keys requests are signed with, and what needs a signature.
#[derive(Debug, Clone)]
pub struct Auth {
    keys: Arc<HashMap<String, String>>,
    region: String,
    metrics_auth: bool,
}

impl Auth {
    pub fn new(keys: HashMap<String, String>, region: &str, metrics_auth: bool) -> Self {
        Auth {
            keys: Arc::new(keys),
            region: region.to_string(),
            metrics_auth,
        }
    }

    fn is_open(&self, path: &str) -> bool {
        matches!(path, "/healthz" | "/readyz" | "/openapi.json" | "/docs")
            || (path == "/metrics" && !self.metrics_auth)
    }
}

/// The middleware: passes a request on only if it is open or signed by a configured key
/// (every request, when no keys are configured).
pub async fn check(State(auth): State<Option<Auth>>, request: Request, next: Next) -> Response {
    let Some(auth) = auth else {
        return next.run(request).await;
    };
    if auth.is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // The body limit layer outside this one bounds what is read here.
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let service = if super::is_data_api(parts.uri.path()) {
        "rds-data"
    } else {
        "rds"
    };
    match auth.verify(&parts, &body, service, Timestamp::now()) {
        Ok(key) => {
            tracing::debug!(access_key = %key, "request authenticated");
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(refusal) => {
            tracing::info!(error = %refusal, path = %parts.uri.path(), "request refused");
            refusal.into_response()
        }
    }
}

/// The signature parameters of a request, from its header or its query string.
struct Claim<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    amz_date: String,
    /// For a presigned request, how long it stays valid, in seconds.
    expires: Option<i64>,
}

impl Auth {
    /// Checks the request's signature; the access key id that made it, or why not.
    pub fn verify(
        &self,
        parts: &Parts,
        body: &Bytes,
        service: &str,
        now: Timestamp,
    ) -> Result<String, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let query_pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let claim = match parts.headers.get("authorization") {
            Some(value) => header_claim(value.to_str().unwrap_or_default(), parts)?,
            None if query_pairs.iter().any(|(k, _)| k == "X-Amz-Signature") => {
                query_claim(&query_pairs)?
            }
            None => {
                return Err(ApiError::MissingAuthenticationToken(
                    "Request is missing Authentication Token: sign it with AWS Signature \
                     Version 4 (an Authorization header or a presigned URL)."
                        .into(),
                ))
            }
        };
        // Owned copies: the claim borrows from the pairs when presigned.
        let (credential, signed_headers, signature) = (
            claim.credential.to_string(),
            claim.signed_headers.to_string(),
            claim.signature.to_string(),
        );
        let (key_id, scope) = self.scope(&credential, service, &claim.amz_date)?;
        let Some(secret) = self.keys.get(key_id) else {
            return Err(ApiError::InvalidClientTokenId(
                "The security token included in the request is invalid.".into(),
            ));
        };
        check_time(&claim.amz_date, claim.expires, now)?;
        let signed_headers: Vec<&str> = signed_headers.split(';').collect();
        if !signed_headers.contains(&"host") {
            return Err(ApiError::IncompleteSignature(
                "The request must sign its Host header (SignedHeaders must include host).".into(),
            ));
        }
        let signed = Signed {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: &canonical_source_query(query),
            headers: parts
                .headers
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
                .collect(),
            signed_headers,
            payload_hash: payload_hash(parts, body)?,
        };
        let string_to_sign =
            sigv4::string_to_sign(&claim.amz_date, &scope, &sigv4::canonical_request(&signed));
        if !sigv4::verify(secret, &scope, &string_to_sign, &signature) {
            return Err(ApiError::SignatureDoesNotMatch(
                "The request signature we calculated does not match the signature you \
                 provided. Check your AWS Secret Access Key and signing method."
                    .into(),
            ));
        }
        Ok(key_id.to_string())
    }

    /// The key id and the scope of `KEY/DATE/REGION/SERVICE/aws4_request`, which must be
    /// this service's.
    fn scope<'c>(
        &self,
        credential: &'c str,
        service: &str,
        amz_date: &str,
    ) -> Result<(&'c str, Scope), ApiError> {
        let [key_id, date, region, signing_name, terminator] =
            credential.split('/').collect::<Vec<_>>()[..]
        else {
            return Err(ApiError::IncompleteSignature(format!(
                "The credential {credential:?} is not ACCESS_KEY/DATE/REGION/SERVICE/aws4_request."
            )));
        };
        let mismatch = ApiError::SignatureDoesNotMatch;
        if region != self.region {
            return Err(mismatch(format!(
                "Credential should be scoped to a valid region, not '{region}' (this service \
                 is in '{}').",
                self.region
            )));
        }
        if signing_name != service {
            return Err(mismatch(format!(
                "Credential should be scoped to correct service: '{service}', not '{signing_name}'."
            )));
        }
        if terminator != "aws4_request" {
            return Err(mismatch(format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
            )));
        }
        if !amz_date.starts_with(date) || date.len() != 8 {
            return Err(mismatch(format!(
                "Date in Credential scope ({date}) does not match YYYYMMDD from the request's \
                 X-Amz-Date ({amz_date})."
            )));
        }
        Ok((
            key_id,
            Scope {
                date: date.to_string(),
                region: region.to_string(),
                service: service.to_string(),
            },
        ))
    }
}

fn header_claim<'h>(value: &'h str, parts: &Parts) -> Result<Claim<'h>, ApiError> {
    let Some(fields) = value.strip_prefix(ALGORITHM).map(str::trim_start) else {
        return Err(ApiError::IncompleteSignature(format!(
            "Authorization header requires the {ALGORITHM} scheme."
        )));
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for field in fields.split(',') {
        match field.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let amz_date = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match (credential, signed_headers, signature, amz_date) {
        (Some(credential), Some(signed_headers), Some(signature), Some(amz_date)) => {
            if !signed_headers.split(';').any(|h| h == "x-amz-date") {
                return Err(ApiError::IncompleteSignature(
                    "The request must sign its X-Amz-Date header.".into(),
                ));
            }
            Ok(Claim {
                credential,
                signed_headers,
                signature,
                amz_date,
                expires: None,
            })
        }
        _ => Err(ApiError::IncompleteSignature(
            "Authorization header requires Credential, SignedHeaders and Signature, and the \
             request an X-Amz-Date header."
                .into(),
        )),
    }
}

fn query_claim(pairs: &[(String, String)]) -> Result<Claim<'_>, ApiError> {
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if get("X-Amz-Algorithm") != Some(ALGORITHM) {
        return Err(ApiError::IncompleteSignature(format!(
            "A presigned request needs X-Amz-Algorithm={ALGORITHM}."
        )));
    }
    let (Some(credential), Some(signed_headers), Some(signature), Some(amz_date)) = (
        get("X-Amz-Credential"),
        get("X-Amz-SignedHeaders"),
        get("X-Amz-Signature"),
        get("X-Amz-Date"),
    ) else {
        return Err(ApiError::IncompleteSignature(
            "A presigned request needs X-Amz-Credential, X-Amz-Date, X-Amz-SignedHeaders and \
             X-Amz-Signature."
                .into(),
        ));
    };
    let expires = match get("X-Amz-Expires") {
        None => MAX_SKEW.as_secs(),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|s| (1..=MAX_EXPIRES_SECS).contains(s))
            .ok_or_else(|| {
                ApiError::IncompleteSignature(format!(
                    "X-Amz-Expires must be between 1 and {MAX_EXPIRES_SECS} seconds, not {v:?}."
                ))
            })?,
    };
    Ok(Claim {
        credential,
        signed_headers,
        signature,
        amz_date: amz_date.to_string(),
        expires: Some(expires),
    })
}

/// The query string a presigned signature covers: everything but the signature itself.
fn canonical_source_query(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.starts_with("X-Amz-Signature="))
        .collect::<Vec<_>>()
        .join("&")
}

/// The hash of the body as it arrived. A client's `x-amz-content-sha256` must be that hash
/// (`UNSIGNED-PAYLOAD` only for an empty body): a body changed after signing never passes.
fn payload_hash(parts: &Parts, body: &Bytes) -> Result<String, ApiError> {
    let computed = sigv4::sha256_hex(body);
    match parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        None => Ok(computed),
        Some("UNSIGNED-PAYLOAD") if body.is_empty() => Ok("UNSIGNED-PAYLOAD".into()),
        Some(claimed) if claimed.eq_ignore_ascii_case(&computed) => Ok(claimed.to_string()),
        Some(_) => Err(ApiError::SignatureDoesNotMatch(
            "The x-amz-content-sha256 header does not match the hash of the request body.".into(),
        )),
    }
}

/// The request's time must be within [`MAX_SKEW`] of now; a presigned one stays valid for
/// its X-Amz-Expires after it.
fn check_time(amz_date: &str, expires: Option<i64>, now: Timestamp) -> Result<(), ApiError> {
    let at = DateTime::strptime("%Y%m%dT%H%M%SZ", amz_date)
        .ok()
        .and_then(|t| t.to_zoned(TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            ApiError::IncompleteSignature(format!(
                "X-Amz-Date must be YYYYMMDD'T'HHMMSS'Z' (UTC), not {amz_date:?}."
            ))
        })?;
    let format = |t: Timestamp| t.strftime("%Y%m%dT%H%M%SZ").to_string();
    if at > now + MAX_SKEW {
        return Err(ApiError::SignatureDoesNotMatch(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            format(now + MAX_SKEW),
            format(now)
        )));
    }
    let valid_for = expires.map_or(MAX_SKEW, SignedDuration::from_secs);
    if at + valid_for < now {
        return Err(ApiError::SignatureDoesNotMatch(match expires {
            None => format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
                format(now - MAX_SKEW),
                format(now)
            ),
            Some(secs) => format!(
                "Request has expired: signed at {amz_date}, valid for {secs} s, now {}.",
                format(now)
            ),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn auth() -> Auth {
        Auth::new(
            HashMap::from([("AKIDEXAMPLE".to_string(), SECRET.to_string())]),
            "us-east-1",
            false,
        )
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// A request as botocore 1.44.8 signed it (`SigV4Auth.add_auth` at a fixed time).
    struct Botocore {
        method: &'static str,
        uri: &'static str,
        host: &'static str,
        content_type: Option<&'static str>,
        body: &'static str,
        signature: &'static str,
        service: &'static str,
        signed_headers: &'static str,
    }

    const FORM: Botocore = Botocore {
        method: "POST",
        uri: "/",
        host: "127.0.0.1:8080",
        content_type: Some("application/x-www-form-urlencoded; charset=utf-8"),
        body: "Action=DescribeDBClusters&Version=2014-10-31&Filters.Filter.1.Name=engine&Filters.Filter.1.Values.Value.1=aurora-mysql",
        signature: "39bbd8c27f901061d7aec6be12fbd95c7e3b3197261fc7c4ffe165444abb78e2",
        service: "rds",
        signed_headers: "content-type;host;x-amz-date",
    };
    const DATA_API: Botocore = Botocore {
        method: "POST",
        uri: "/Execute",
        host: "localhost:8080",
        content_type: Some("application/json"),
        body: r#"{"resourceArn": "arn:aws:rds:us-east-1:000000000000:cluster:shop", "secretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:local", "sql": "SELECT 1"}"#,
        signature: "3885f31d73e58816e026ce239651c4c2797783c82465aeea8ae29bd3efab3359",
        service: "rds-data",
        signed_headers: "content-type;host;x-amz-date",
    };
    const REST_GET: Botocore = Botocore {
        method: "GET",
        uri: "/v1/clusters?MaxRecords=20&engine=aurora-mysql",
        host: "127.0.0.1:8080",
        content_type: None,
        body: "",
        signature: "dbd63caf0b34e78aa49995018a88ac135314fd716ce478063281dcf43b85d5ae",
        service: "rds",
        signed_headers: "host;x-amz-date",
    };
    const SIGNED_AT: &str = "2026-11-23T10:15:30Z";

    fn parts(signed: &Botocore) -> Parts {
        let mut request = HttpRequest::builder()
            .method(signed.method)
            .uri(signed.uri)
            .header("host", signed.host)
            .header("x-amz-date", "20261123T101530Z")
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/us-east-1/{}/aws4_request, SignedHeaders={}, Signature={}",
                    signed.service, signed.signed_headers, signed.signature
                ),
            )
            // Headers the client did not sign do not count.
            .header("user-agent", "Botocore/1.44.8");
        if let Some(ct) = signed.content_type {
            request = request.header("content-type", ct);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn requests_botocore_signed_are_verified() {
        for signed in [FORM, DATA_API, REST_GET] {
            let verified = auth().verify(
                &parts(&signed),
                &Bytes::from_static(signed.body.as_bytes()),
                signed.service,
                at(SIGNED_AT),
            );
            assert_eq!(verified, Ok("AKIDEXAMPLE".to_string()), "{}", signed.uri);
        }
    }

    #[test]
    fn a_changed_body_method_path_or_header_breaks_the_signature() {
        let good = Bytes::from_static(FORM.body.as_bytes());
        let changed = Bytes::from(FORM.body.replace("aurora-mysql", "aurora-postgresql"));
        let mismatch =
            |r: Result<String, ApiError>| matches!(r, Err(ApiError::SignatureDoesNotMatch(_)));
        assert!(mismatch(auth().verify(
            &parts(&FORM),
            &changed,
            "rds",
            at(SIGNED_AT)
        )));
        let mut other_path = parts(&FORM);
        other_path.uri = "/v1/clusters".parse().unwrap();
        assert!(mismatch(auth().verify(
            &other_path,
            &good,
            "rds",
            at(SIGNED_AT)
        )));
        let mut other_host = parts(&FORM);
        other_host
            .headers
            .insert("host", "evil.example".parse().unwrap());
        assert!(mismatch(auth().verify(
            &other_host,
            &good,
            "rds",
            at(SIGNED_AT)
        )));
        let mut claimed_hash = parts(&FORM);
        claimed_hash.headers.insert(
            "x-amz-content-sha256",
            sigv4::sha256_hex(b"other").parse().unwrap(),
        );
        assert!(mismatch(auth().verify(
            &claimed_hash,
            &good,
            "rds",
            at(SIGNED_AT)
        )));
        // The Data API's signature is not good for the RDS API, nor the reverse.
        let data = Bytes::from_static(DATA_API.body.as_bytes());
        assert!(mismatch(auth().verify(
            &parts(&DATA_API),
            &data,
            "rds",
            at(SIGNED_AT)
        )));
    }

    #[test]
    fn a_signature_is_good_for_15_minutes_either_way() {
        let body = Bytes::from_static(FORM.body.as_bytes());
        let verify = |now: &str| auth().verify(&parts(&FORM), &body, "rds", at(now));
        assert!(verify("2026-11-23T10:30:30Z").is_ok());
        assert!(verify("2026-11-23T10:00:30Z").is_ok());
        for (now, words) in [
            (
                "2026-11-23T10:30:31Z",
                "Signature expired: 20261123T101530Z is now earlier than 20261123T101531Z",
            ),
            ("2026-11-23T10:00:29Z", "Signature not yet current"),
        ] {
            match verify(now) {
                Err(ApiError::SignatureDoesNotMatch(m)) => assert!(m.contains(words), "{m}"),
                other => panic!("{now}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_unknown_and_malformed_credentials_have_their_codes() {
        let body = Bytes::from_static(FORM.body.as_bytes());
        let mut unsigned = parts(&FORM);
        unsigned.headers.remove("authorization");
        assert!(matches!(
            auth().verify(&unsigned, &body, "rds", at(SIGNED_AT)),
            Err(ApiError::MissingAuthenticationToken(_))
        ));
        let stranger = Auth::new(
            HashMap::from([("AKIDOTHER".into(), SECRET.into())]),
            "us-east-1",
            false,
        );
        assert!(matches!(
            stranger.verify(&parts(&FORM), &body, "rds", at(SIGNED_AT)),
            Err(ApiError::InvalidClientTokenId(_))
        ));
        let elsewhere = Auth::new(
            HashMap::from([("AKIDEXAMPLE".into(), SECRET.into())]),
            "eu-west-1",
            false,
        );
        assert!(matches!(
            elsewhere.verify(&parts(&FORM), &body, "rds", at(SIGNED_AT)),
            Err(ApiError::SignatureDoesNotMatch(m)) if m.contains("region")
        ));
        for header in [
            "Bearer abc",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/us-east-1/rds/aws4_request",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/rds, SignedHeaders=host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/us-east-1/rds/aws4_request, SignedHeaders=x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261123/us-east-1/rds/aws4_request, SignedHeaders=host, Signature=00",
        ] {
            let mut malformed = parts(&FORM);
            malformed.headers.insert("authorization", header.parse().unwrap());
            assert!(
                matches!(
                    auth().verify(&malformed, &body, "rds", at(SIGNED_AT)),
                    Err(ApiError::IncompleteSignature(_))
                ),
                "{header}"
            );
        }
    }
}
