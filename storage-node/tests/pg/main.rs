//! The PostgreSQL protocol of the real node process, with a real driver (sqlx's PostgreSQL
//! driver, simple and extended query protocols): SCRAM-SHA-256 against the stored verifier,
//! DDL and DML, typed results, parameters of every type, several statements in one query,
//! transactions and savepoints (open ones count as the volume's open transactions, an error
//! aborts them), SQLSTATEs for failed logins and statements, TLS, the connection limits, the
//! idle timeout, and sessions ended by a backtrack.

use std::process::Command;
use std::time::Duration;

use backtrack_storage_node::api::VolumeAccess;
use backtrack_storage_node::client::NodeClient;
use backtrack_storage_node::scram::Verifier;
use backtrack_storage_node::testing::Spawned;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection, Row};

mod sessions;

const TOKEN: &str = "pg-test";
const PASSWORD: &str = "correct-Horse9";

struct Node {
    process: Spawned,
    client: NodeClient,
    pg_port: u16,
    _dir: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn node_with_database() -> Node {
    node_with_database_and(&[]).await
}

async fn node_with_database_and(flags: &[&str]) -> Node {
    let dir = tempdir::Dir(
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pg-{}", uuid::Uuid::new_v4().simple())),
    );
    let process = Spawned::start(
        Command::new(env!("CARGO_BIN_EXE_backtrack-storage-node"))
            .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
            .args(flags)
            .arg("--data-dir")
            .arg(&dir.0)
            .env("RUST_LOG", "warn"),
    );
    let client = NodeClient::new(&process.url, TOKEN, Duration::from_secs(10));
    client.create_volume("v1", 3600).await.unwrap();
    let access = VolumeAccess {
        database: "shop".into(),
        username: "admin".into(),
        verifier: Verifier::new(PASSWORD).to_string(),
    };
    client.set_access("v1", &access).await.unwrap();
    let pg_port = client
        .health()
        .await
        .unwrap()
        .pg_port
        .expect("a PostgreSQL port");
    Node {
        process,
        client,
        pg_port,
        _dir: dir,
    }
}

fn options(node: &Node, user: &str, password: &str, database: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(node.pg_port)
        .username(user)
        .password(password)
        .database(database)
        .ssl_mode(PgSslMode::Disable)
}

fn sqlstate(e: sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.to_string()).unwrap_or_default(),
        other => panic!("not a database error: {other}"),
    }
}

#[tokio::test]
async fn a_driver_connects_with_scram_and_runs_sqlite_sql_with_typed_results() {
    let node = node_with_database().await;
    let mut conn = PgConnection::connect_with(&options(&node, "admin", PASSWORD, "shop"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, ok BOOLEAN, data BLOB); \
         INSERT INTO t (name, score, ok, data) VALUES ('a;b', 1.5, 1, x'cafe'), ('b', NULL, 0, NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let rows = sqlx::raw_sql("SELECT id, name, score, ok, data FROM t ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<i64, _>("id"), 1);
    assert_eq!(rows[0].get::<String, _>("name"), "a;b");
    assert_eq!(rows[0].get::<f64, _>("score"), 1.5);
    assert!(rows[0].get::<bool, _>("ok"));
    assert_eq!(rows[0].get::<Vec<u8>, _>("data"), vec![0xca, 0xfe]);
    assert_eq!(rows[1].get::<Option<f64>, _>("score"), None);
    assert!(!rows[1].get::<bool, _>("ok"));
    // Undeclared columns take their values' types.
    let row = sqlx::raw_sql("SELECT count(*) AS n, sum(score) AS s, 'x' AS t FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("n"), 2);
    assert_eq!(row.get::<f64, _>("s"), 1.5);
    assert_eq!(row.get::<String, _>("t"), "x");

    // A transaction is one of the node's: open, it counts for a backtrack's Force.
    sqlx::raw_sql(
        "/* the app's */ BEGIN; INSERT INTO t (name) VALUES ('in tx'); SAVEPOINT s; \
                   INSERT INTO t (name) VALUES ('undone'); ROLLBACK TO s",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(node.client.volume("v1").await.unwrap().open_transactions, 1);
    sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
    assert_eq!(node.client.volume("v1").await.unwrap().open_transactions, 0);
    let names: Vec<String> = sqlx::raw_sql("SELECT name FROM t ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["a;b", "b", "in tx"]);
    sqlx::raw_sql("BEGIN; DELETE FROM t; ROLLBACK")
        .execute(&mut conn)
        .await
        .unwrap();
    let row = sqlx::raw_sql("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(0), 3);

    // A transaction left open by a connection that goes is rolled back.
    sqlx::raw_sql("BEGIN; DELETE FROM t")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node.client.volume("v1").await.unwrap().open_transactions > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the transaction stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut conn = PgConnection::connect_with(&options(&node, "admin", PASSWORD, "shop"))
        .await
        .unwrap();
    let row = sqlx::raw_sql("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(0), 3);
}

#[tokio::test]
async fn failed_logins_and_statements_get_postgresql_sqlstates() {
    let node = node_with_database().await;
    for (user, password, database, code) in [
        ("admin", "wrong-Horse9", "shop", "28P01"),
        ("intruder", PASSWORD, "shop", "28P01"),
        ("admin", PASSWORD, "nowhere", "3D000"),
    ] {
        let refused = PgConnection::connect_with(&options(&node, user, password, database))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(refused), code, "{user} {database}");
    }
    let mut conn = PgConnection::connect_with(&options(&node, "admin", PASSWORD, "shop"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE u (k TEXT UNIQUE NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql("INSERT INTO u VALUES ('a')")
        .execute(&mut conn)
        .await
        .unwrap();
    for (sql, code) in [
        ("INSERT INTO u VALUES ('a')", "23505"),
        ("INSERT INTO u VALUES (NULL)", "23502"),
        ("SELECT * FROM missing", "42P01"),
        ("SELEKT 1", "42601"),
        ("PRAGMA writable_schema = 1", "42501"),
        ("CREATE EXTENSION postgis", "0A000"),
        ("COPY u FROM STDIN", "0A000"),
        ("TRUNCATE u", "0A000"),
    ] {
        let e = sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_err();
        assert_eq!(sqlstate(e), code, "{sql}");
    }
    // A failed statement stops the rest of its query, and the connection goes on.
    let e = sqlx::raw_sql(
        "INSERT INTO u VALUES ('b'); SELECT * FROM missing; INSERT INTO u VALUES ('c')",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert_eq!(sqlstate(e), "42P01");
    let keys: Vec<String> = sqlx::raw_sql("SELECT k FROM u ORDER BY k")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, ["a", "b"]);
}

#[tokio::test]
async fn a_backtrack_ends_every_connection_and_reconnections_see_the_state_at_t() {
    let node = node_with_database().await;
    let opts = options(&node, "admin", PASSWORD, "shop");
    let connect = || PgConnection::connect_with(&opts);
    let mut idle = connect().await.unwrap();
    // What drivers send on connect.
    sqlx::raw_sql("SET application_name = 'test'; SET extra_float_digits TO 3")
        .execute(&mut idle)
        .await
        .unwrap();
    let row = sqlx::raw_sql("SHOW application_name")
        .fetch_one(&mut idle)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "test");
    let row = sqlx::raw_sql("SHOW server_version")
        .fetch_one(&mut idle)
        .await
        .unwrap();
    assert!(row.get::<String, _>(0).starts_with("16."));
    sqlx::raw_sql("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)")
        .execute(&mut idle)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = now_us();
    tokio::time::sleep(Duration::from_millis(20)).await;
    sqlx::raw_sql("INSERT INTO t VALUES (2)")
        .execute(&mut idle)
        .await
        .unwrap();
    let mut in_transaction = connect().await.unwrap();
    sqlx::raw_sql("BEGIN; INSERT INTO t VALUES (3)")
        .execute(&mut in_transaction)
        .await
        .unwrap();

    // Without Force, the open transaction refuses the backtrack, and nothing changes.
    let request = |force| backtrack_storage_node::api::BacktrackRequest {
        backtrack_id: uuid::Uuid::new_v4(),
        to_us: t,
        clamp_to_earliest: false,
        force,
    };
    let refused = node
        .client
        .backtrack("v1", &request(false))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(backtrack_storage_node::api::ErrorCode::OpenTransactions)
    );
    let row = sqlx::raw_sql("SELECT count(*) FROM t")
        .fetch_one(&mut idle)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(0), 2);

    // With Force it runs, and every connection ends with 57P01.
    node.client.backtrack("v1", &request(true)).await.unwrap();
    for conn in [&mut idle, &mut in_transaction] {
        let e = sqlx::raw_sql("SELECT count(*) FROM t")
            .fetch_one(&mut *conn)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(e), "57P01");
    }
    let mut again = connect().await.unwrap();
    let values: Vec<i64> = sqlx::raw_sql("SELECT x FROM t ORDER BY x")
        .fetch_all(&mut again)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(values, [1]);
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[tokio::test]
async fn prepared_statements_take_parameters_of_every_type_in_binary_and_text() {
    let node = node_with_database().await;
    let mut conn = PgConnection::connect_with(&options(&node, "admin", PASSWORD, "shop"))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE p (id INTEGER PRIMARY KEY, n INTEGER, r REAL, t TEXT, b BLOB, f BOOLEAN)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("INSERT INTO p (n, r, t, b, f) VALUES ($1, $2, $3, $4, $5)")
        .bind(42_i64)
        .bind(2.5_f64)
        .bind("héllo $1 ;")
        .bind(vec![1u8, 2, 3])
        .bind(true)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO p (n, r, t, f) VALUES ($1, $2, $3, $4)")
        .bind(7_i32)
        .bind(1.5_f32)
        .bind(None::<String>)
        .bind(false)
        .execute(&mut conn)
        .await
        .unwrap();
    let row = sqlx::query("SELECT n, r, t, b, f FROM p WHERE n = $1")
        .bind(42_i64)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("n"), 42);
    assert_eq!(row.get::<f64, _>("r"), 2.5);
    assert_eq!(row.get::<String, _>("t"), "héllo $1 ;");
    assert_eq!(row.get::<Vec<u8>, _>("b"), vec![1, 2, 3]);
    assert!(row.get::<bool, _>("f"));
    let row = sqlx::query("SELECT n, t, f FROM p WHERE n = $1")
        .bind(7_i16)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<Option<String>, _>("t"), None);
    assert!(!row.get::<bool, _>("f"));
    let done = sqlx::query("UPDATE p SET t = $1 WHERE n > $2")
        .bind("x")
        .bind(0_i64)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 2);
    // An expression is described by its form where that fixes its type, else as text.
    let row = sqlx::query(
        "SELECT count(*), avg(r) AS mean, upper(t), CAST(f AS BOOLEAN), $1 = 1, sum(n), \
         version(), current_database() FROM p",
    )
    .bind(1_i64)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>(0), 2);
    assert_eq!(row.get::<f64, _>("mean"), 2.0);
    assert_eq!(row.get::<String, _>(2), "X");
    assert!(row.get::<bool, _>(3));
    assert_eq!(row.get::<i64, _>(4), 1);
    assert_eq!(row.get::<String, _>(5), "49");
    assert!(row
        .get::<String, _>(6)
        .starts_with("PostgreSQL 16.6 (Backtrack "));
    assert_eq!(row.get::<String, _>(7), "shop");

    // The driver's own transactions.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("DELETE FROM p WHERE n = $1")
        .bind(42_i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(node.client.volume("v1").await.unwrap().open_transactions, 1);
    tx.rollback().await.unwrap();
    let count: Vec<i64> = sqlx::query("SELECT n FROM p ORDER BY n")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(count, [7, 42]);

    // An error aborts the transaction, as in PostgreSQL: until ROLLBACK (or ROLLBACK TO a
    // savepoint) statements get 25P02, and COMMIT rolls it back.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("DELETE FROM p WHERE n = 7")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SAVEPOINT before_mistake")
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = sqlx::query("INSERT INTO p (id) VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), "23505");
    for sql in ["SELECT n FROM p", "SELEKT 1"] {
        let e = sqlx::query(sql).execute(&mut *tx).await.unwrap_err();
        assert_eq!(sqlstate(e), "25P02", "{sql}");
    }
    sqlx::raw_sql("ROLLBACK TO before_mistake")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM p WHERE n = 42")
        .execute(&mut *tx)
        .await
        .unwrap();
    let e = sqlx::query("SELECT * FROM missing")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), "42P01");
    tx.commit().await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM p")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 2, "the aborted transaction's COMMIT rolled it back");

    // Errors keep their SQLSTATEs through the extended protocol.
    for (sql, code) in [
        ("LISTEN events", "0A000"),
        ("INSERT INTO missing VALUES ($1)", "42P01"),
        ("INSERT INTO p (id) VALUES ($1)", "23505"),
    ] {
        let mut query = sqlx::query(sql);
        if sql.contains("$1") {
            query = query.bind(1_i64);
        }
        let e = query.execute(&mut conn).await.unwrap_err();
        assert_eq!(sqlstate(e), code, "{sql}");
    }
}

#[tokio::test]
async fn connections_beyond_the_limits_are_refused_with_53300_until_one_goes() {
    let node = node_with_database_and(&["--pg-max-connections-per-database", "2"]).await;
    let opts = options(&node, "admin", PASSWORD, "shop");
    let first = PgConnection::connect_with(&opts).await.unwrap();
    let mut second = PgConnection::connect_with(&opts).await.unwrap();
    let refused = PgConnection::connect_with(&opts).await.unwrap_err();
    assert_eq!(sqlstate(refused), "53300");
    // Failed logins take no place.
    for _ in 0..3 {
        let wrong = options(&node, "admin", "wrong-Horse9", "shop");
        assert!(PgConnection::connect_with(&wrong).await.is_err());
    }
    first.close().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut third = loop {
        match PgConnection::connect_with(&opts).await {
            Ok(conn) => break conn,
            Err(e) => {
                assert_eq!(sqlstate(e), "53300");
                assert!(
                    std::time::Instant::now() < deadline,
                    "the place never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for conn in [&mut second, &mut third] {
        sqlx::raw_sql("SELECT 1").execute(&mut *conn).await.unwrap();
    }
}
