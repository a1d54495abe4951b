//! A session's life beyond its statements: TLS when the node has a certificate (and the
//! check of the files before it starts), the idle timeout, and the end of every session of a
//! volume when a backtrack of it goes ahead.

use std::process::Command;
use std::time::Duration;

use sqlx::postgres::PgSslMode;
use sqlx::{Connection, PgConnection};

use super::*;

#[tokio::test]
async fn tls_when_the_node_has_a_certificate_and_idle_or_backtracked_sessions_end_at_once() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let (cert, key) = (
        format!("{fixtures}/pg-test.crt"),
        format!("{fixtures}/pg-test.key"),
    );
    let node = node_with_database_and(&[
        "--pg-tls-cert",
        &cert,
        "--pg-tls-key",
        &key,
        "--pg-idle-timeout-secs",
        "2",
        "--pg-max-connections-per-database",
        "2",
    ])
    .await;
    let tls = options(&node, "admin", PASSWORD, "shop").ssl_mode(PgSslMode::Require);
    let mut conn = PgConnection::connect_with(&tls).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (x INTEGER)")
        .execute(&mut conn)
        .await
        .unwrap();
    // A node without a certificate refuses sslmode=require, and serves prefer in plain.
    let plain = node_with_database().await;
    let opts = options(&plain, "admin", PASSWORD, "shop");
    PgConnection::connect_with(&opts.clone().ssl_mode(PgSslMode::Require))
        .await
        .unwrap_err();
    PgConnection::connect_with(&opts.ssl_mode(PgSslMode::Prefer))
        .await
        .unwrap();

    // A session idle past the timeout is ended (57P05), and gives its place back.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = sqlx::raw_sql("SELECT 1")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), "57P05");

    // A backtrack ends every session of the volume when it goes ahead, idle ones included:
    // their places are free for new connections at once.
    let t = now_us();
    let _first = PgConnection::connect_with(&tls).await.unwrap();
    let _second = PgConnection::connect_with(&tls).await.unwrap();
    let full = PgConnection::connect_with(&tls).await.unwrap_err();
    assert_eq!(sqlstate(full), "53300");
    node.client
        .backtrack(
            "v1",
            &backtrack_storage_node::api::BacktrackRequest {
                backtrack_id: uuid::Uuid::new_v4(),
                to_us: t,
                clamp_to_earliest: false,
                force: false,
            },
        )
        .await
        .unwrap();
    // Well before the idle timeout would end them.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match PgConnection::connect_with(&tls).await {
            Ok(_) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the backtracked sessions kept their places: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn tls_files_that_do_not_load_are_refused_before_the_node_starts() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let check = |cert: &str, key: &str| {
        Command::new(env!("CARGO_BIN_EXE_backtrack-storage-node"))
            .args([
                "check-config",
                "--token",
                TOKEN,
                "--pg-tls-cert",
                cert,
                "--pg-tls-key",
                key,
            ])
            .output()
            .unwrap()
    };
    let good = check(
        &format!("{fixtures}/pg-test.crt"),
        &format!("{fixtures}/pg-test.key"),
    );
    assert!(good.status.success(), "{good:?}");
    for (cert, key, why) in [
        (
            "/nonexistent.crt",
            "pg-test.key",
            "cannot read /nonexistent.crt",
        ),
        ("pg-test.key", "pg-test.key", "holds no PEM certificate"),
        ("pg-test.crt", "pg-test.crt", "holds no PEM private key"),
    ] {
        let path = |f: &str| {
            if f.starts_with('/') {
                f.to_string()
            } else {
                format!("{fixtures}/{f}")
            }
        };
        let refused = check(&path(cert), &path(key));
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains(why), "{cert} {key}: {said}");
    }
}

/// Each connection runs on a thread of its own: a runaway statement on one holds up neither
/// the others nor the HTTP API. A node asked to stop interrupts what runs and tells every
/// session why (57P01), idle ones and ones inside a transaction, before it exits.
#[tokio::test]
async fn a_runaway_statement_holds_up_no_one_and_a_stopping_node_ends_its_sessions_with_57p01() {
    let node = node_with_database().await;
    let opts = options(&node, "admin", PASSWORD, "shop");
    let mut idle = PgConnection::connect_with(&opts).await.unwrap();
    let mut writing = PgConnection::connect_with(&opts).await.unwrap();
    let mut reading = PgConnection::connect_with(&opts).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (x INTEGER)")
        .execute(&mut idle)
        .await
        .unwrap();
    let mut runaway_conn = PgConnection::connect_with(&opts).await.unwrap();
    let runaway = tokio::spawn(async move {
        let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                   SELECT count(*) FROM c";
        sqlx::query(sql)
            .fetch_one(&mut runaway_conn)
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..50 {
        let row = sqlx::query("SELECT $1 + 1")
            .bind(i as i64)
            .fetch_one(&mut reading)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), (i + 1).to_string());
    }
    node.client.health().await.unwrap();
    // All that while, the runaway ran (its time limit is 10 s).
    assert!(!runaway.is_finished());

    sqlx::raw_sql("BEGIN; INSERT INTO t VALUES (1)")
        .execute(&mut writing)
        .await
        .unwrap();
    let pid = node.process.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let interrupted = runaway.await.unwrap().unwrap_err();
    // As PostgreSQL's fast shutdown: the running statement is stopped, its session ended.
    assert_eq!(sqlstate(interrupted), "57P01");
    for conn in [&mut idle, &mut writing, &mut reading] {
        let e = sqlx::raw_sql("SELECT 1").execute(conn).await.unwrap_err();
        assert_eq!(sqlstate(e), "57P01");
    }
}
