//! SigV4 authentication against the real app: with access keys configured, every API (the
//! query protocol, REST, the Data API) takes only requests signed by one of them, answers the
//! others 403 in its own error format, and does nothing they asked for.

use backtrack_service::config::Config;
use backtrack_service::http::auth::sigv4::{self, Scope, Signed};
use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};
use crate::query::{assert_xml_error, reply};

const KEY: &str = "AKIDBACKTRACKTEST";
const SECRET: &str = "s3cr3t/with+base64=chars";

async fn app_with_keys() -> TestApp {
    spawn_app_with(|c| {
        c.access_keys = vec![format!("{KEY}:{SECRET}").parse().unwrap()];
    })
    .await
}

/// A client's signature: what botocore does, written out.
struct Signer {
    key: &'static str,
    secret: &'static str,
    region: &'static str,
    service: &'static str,
}

const RDS: Signer = Signer {
    key: KEY,
    secret: SECRET,
    region: "us-east-1",
    service: "rds",
};

impl Signer {
    /// Sends a body signed at `at` (the body sent may differ from the one signed).
    async fn send(
        &self,
        app: &TestApp,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        (signed_body, sent_body): (&str, &str),
        at: Timestamp,
    ) -> reqwest::Response {
        let host = app.address.trim_start_matches("http://").to_string();
        let amz_date = at.strftime("%Y%m%dT%H%M%SZ").to_string();
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let scope = Scope {
            date: amz_date[..8].to_string(),
            region: self.region.into(),
            service: self.service.into(),
        };
        let signed = Signed {
            method: method.as_str(),
            path,
            query,
            headers: vec![
                ("content-type", content_type),
                ("host", &host),
                ("x-amz-date", &amz_date),
            ],
            signed_headers: vec!["content-type", "host", "x-amz-date"],
            payload_hash: sigv4::sha256_hex(signed_body.as_bytes()),
        };
        let sts = sigv4::string_to_sign(&amz_date, &scope, &sigv4::canonical_request(&signed));
        let signature = sigv4::signature(self.secret, &scope, &sts);
        app.http
            .request(method, format!("{}{path_and_query}", app.address))
            .header("content-type", content_type)
            .header("x-amz-date", &amz_date)
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders=content-type;host;x-amz-date, Signature={signature}",
                    self.key,
                    scope.text()
                ),
            )
            .body(sent_body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn form(&self, app: &TestApp, form: &str) -> reqwest::Response {
        self.send(app, Method::POST, "/", FORM, (form, form), Timestamp::now())
            .await
    }
}

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
const CREATE: &str =
    "Action=CreateDBCluster&Version=2014-10-31&DBClusterIdentifier=shop&BacktrackWindow=3600";

async fn cluster_count(app: &TestApp) -> usize {
    let listed = RDS
        .send(
            app,
            Method::GET,
            "/v1/clusters",
            "application/json",
            ("", ""),
            Timestamp::now(),
        )
        .await;
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    listed["DBClusters"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_signed_request_is_served_on_every_api() {
    let app = app_with_keys().await;
    let created = reply(RDS.form(&app, CREATE).await).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(cluster_count(&app).await, 1);
    let data = Signer {
        service: "rds-data",
        ..RDS
    };
    let body = json!({
        "resourceArn": "arn:aws:rds:us-east-1:000000000000:cluster:shop",
        "secretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:local",
        "sql": "SELECT 1"
    })
    .to_string();
    let executed = data
        .send(
            &app,
            Method::POST,
            "/Execute",
            "application/json",
            (&body, &body),
            Timestamp::now(),
        )
        .await;
    // Past authentication: the mock node has no SQL, so the call fails further in.
    assert_ne!(executed.status(), 403);
}

#[tokio::test]
async fn unsigned_requests_get_403_missing_authentication_token_in_each_apis_format() {
    let app = app_with_keys().await;
    let query = app.post_raw("/", FORM, CREATE).await;
    assert_xml_error(&reply(query).await, 403, "MissingAuthenticationToken");
    let (status, body) = app.get("/v1/clusters").await;
    crate::helpers::assert_error(status, &body, 403, "MissingAuthenticationToken");
    let (status, body) = app
        .post("/v1/clusters", json!({"DBClusterIdentifier": "x"}))
        .await;
    crate::helpers::assert_error(status, &body, 403, "MissingAuthenticationToken");
    let data = app
        .execute(
            json!({"resourceArn": "a".repeat(11), "secretArn": "b".repeat(11), "sql": "SELECT 1"}),
        )
        .await;
    assert_eq!(data.status(), 403);
    assert_eq!(
        data.headers()["x-amzn-errortype"],
        "MissingAuthenticationToken"
    );
    let data: Value = data.json().await.unwrap();
    assert!(data["message"]
        .as_str()
        .unwrap()
        .contains("Authentication Token"));
    // Open: health, the document and its page, and metrics.
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs", "/metrics"] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), 403, "{path}");
    }
    assert_eq!(cluster_count(&app).await, 0);
}

#[tokio::test]
async fn a_wrong_secret_an_unknown_key_or_a_foreign_scope_is_refused_and_changes_nothing() {
    let app = app_with_keys().await;
    let cases = [
        (
            Signer {
                secret: "not-the-secret",
                ..RDS
            },
            "SignatureDoesNotMatch",
        ),
        (
            Signer {
                key: "AKIDUNKNOWN",
                ..RDS
            },
            "InvalidClientTokenId",
        ),
        (
            Signer {
                region: "eu-west-1",
                ..RDS
            },
            "SignatureDoesNotMatch",
        ),
        (
            Signer {
                service: "ec2",
                ..RDS
            },
            "SignatureDoesNotMatch",
        ),
    ];
    for (signer, code) in cases {
        assert_xml_error(&reply(signer.form(&app, CREATE).await).await, 403, code);
    }
    // The Data API takes `rds-data` signatures, not `rds` ones.
    let body = r#"{"resourceArn":"arn:aws:rds:us-east-1:000000000000:cluster:shop","secretArn":"arn:aws:secretsmanager:x","sql":"SELECT 1"}"#;
    let data = RDS
        .send(
            &app,
            Method::POST,
            "/Execute",
            "application/json",
            (body, body),
            Timestamp::now(),
        )
        .await;
    assert_eq!(data.status(), 403);
    assert_eq!(data.headers()["x-amzn-errortype"], "SignatureDoesNotMatch");
    assert_eq!(cluster_count(&app).await, 0);
}

#[tokio::test]
async fn a_body_changed_after_signing_is_refused() {
    let app = app_with_keys().await;
    let tampered = CREATE.replace("shop", "evil");
    let response = RDS
        .send(
            &app,
            Method::POST,
            "/",
            FORM,
            (CREATE, &tampered),
            Timestamp::now(),
        )
        .await;
    assert_xml_error(&reply(response).await, 403, "SignatureDoesNotMatch");
    let rest_signed = json!({"DBClusterIdentifier": "a"}).to_string();
    let rest_sent = json!({"DBClusterIdentifier": "b"}).to_string();
    let response = RDS
        .send(
            &app,
            Method::POST,
            "/v1/clusters",
            "application/json",
            (&rest_signed, &rest_sent),
            Timestamp::now(),
        )
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(cluster_count(&app).await, 0);
}

#[tokio::test]
async fn a_signature_more_than_15_minutes_from_now_is_refused() {
    let app = app_with_keys().await;
    for (offset, words) in [(-16, "expired"), (16, "not yet current")] {
        let at = Timestamp::now() + SignedDuration::from_mins(offset);
        let response = RDS
            .send(&app, Method::POST, "/", FORM, (CREATE, CREATE), at)
            .await;
        let reply = reply(response).await;
        assert_xml_error(&reply, 403, "SignatureDoesNotMatch");
        assert!(reply.body.contains(words), "{}", reply.body);
    }
    // Within the skew, it is accepted.
    let at = Timestamp::now() - SignedDuration::from_mins(10);
    let response = RDS
        .send(&app, Method::POST, "/", FORM, (CREATE, CREATE), at)
        .await;
    assert_eq!(response.status(), 200);
}

/// A presigned GET: the signature in the query string.
async fn presigned(app: &TestApp, query: &str, at: Timestamp, expires: u32) -> reqwest::Response {
    let host = app.address.trim_start_matches("http://").to_string();
    let amz_date = at.strftime("%Y%m%dT%H%M%SZ").to_string();
    let scope = Scope {
        date: amz_date[..8].to_string(),
        region: "us-east-1".into(),
        service: "rds".into(),
    };
    let credential = format!("{KEY}/{}", scope.text()).replace('/', "%2F");
    let query = format!(
        "{query}&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}&X-Amz-Date={amz_date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host"
    );
    let signed = Signed {
        method: "GET",
        path: "/",
        query: &query,
        headers: vec![("host", &host)],
        signed_headers: vec!["host"],
        payload_hash: sigv4::sha256_hex(b""),
    };
    let sts = sigv4::string_to_sign(&amz_date, &scope, &sigv4::canonical_request(&signed));
    let signature = sigv4::signature(SECRET, &scope, &sts);
    app.http
        .get(format!(
            "{}/?{query}&X-Amz-Signature={signature}",
            app.address
        ))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_presigned_url_works_until_it_expires() {
    let app = app_with_keys().await;
    let create = "Action=CreateDBCluster&Version=2014-10-31&DBClusterIdentifier=shop";
    let fresh = reply(presigned(&app, create, Timestamp::now(), 60).await).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let old = Timestamp::now() - SignedDuration::from_secs(120);
    let describe = "Action=DescribeDBClusters&Version=2014-10-31";
    let stale = reply(presigned(&app, describe, old, 60).await).await;
    assert_xml_error(&stale, 403, "SignatureDoesNotMatch");
    assert_eq!(cluster_count(&app).await, 1);
}

#[tokio::test]
async fn metrics_need_a_signature_with_metrics_auth() {
    let app = spawn_app_with(|c| {
        c.access_keys = vec![format!("{KEY}:{SECRET}").parse().unwrap()];
        c.metrics_auth = true;
    })
    .await;
    let open = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 403);
    let signed = RDS
        .send(
            &app,
            Method::GET,
            "/metrics",
            "text/plain",
            ("", ""),
            Timestamp::now(),
        )
        .await;
    assert_eq!(signed.status(), 200);
}

#[test]
fn serve_refuses_a_public_address_without_keys_unless_told_it_is_insecure() {
    let mut config = Config::defaults();
    config.listen = "0.0.0.0:8080".parse().unwrap();
    let refusal = config.validate().unwrap_err();
    assert!(
        refusal.contains("--insecure-no-auth") && refusal.contains("--access-key"),
        "{refusal}"
    );
    config.insecure_no_auth = true;
    assert!(config.validate().is_ok());
    config.insecure_no_auth = false;
    config.access_keys = vec!["id:secret".parse().unwrap()];
    assert!(config.validate().is_ok());
    // The loopback default needs nothing.
    assert!(Config::defaults().validate().is_ok());
}

#[test]
fn access_keys_come_from_flags_and_a_file() {
    let dir = crate::helpers::TempDir::new();
    let file = dir.0.join("keys");
    std::fs::write(&file, "# team keys\nAKIDA:secret-a\n\n AKIDB:secret-b \n").unwrap();
    let mut config = Config::defaults();
    config.access_keys = vec!["AKIDC:secret-c".parse().unwrap()];
    config.access_keys_file = Some(file.clone());
    let keys = config.access_keys().unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys["AKIDB"], "secret-b");
    std::fs::write(&file, "AKIDA:one\nAKIDA:two\n").unwrap();
    assert!(config.access_keys().unwrap_err().contains("twice"));
    std::fs::write(&file, "no-colon-here\n").unwrap();
    assert!(config.access_keys().unwrap_err().contains("line 1"));
    config.access_keys_file = Some(dir.0.join("missing"));
    assert!(config.access_keys().unwrap_err().contains("cannot read"));
    assert!("id:"
        .parse::<backtrack_service::config::AccessKey>()
        .is_err());
    // check-config shows the ids, never the secrets.
    let shown = serde_json::to_string(
        &Config {
            access_keys_file: None,
            ..config
        }
        .effective()
        .unwrap(),
    )
    .unwrap();
    assert!(
        shown.contains("AKIDC") && !shown.contains("secret-c"),
        "{shown}"
    );
}
