//! The store's own guarantees, on whichever backend the run uses.

use backtrack_service::domain::{
    new_resource_id, Backtrack, BacktrackStatus, Cluster, ClusterId, ClusterStatus, RestoreType,
    RestoredFrom, Timestamp,
};
use backtrack_service::store::{JobOutcome, Store, StoreError};
use uuid::Uuid;

use crate::helpers::TestDb;

fn cluster(id: &str) -> Cluster {
    let now = Timestamp::now();
    Cluster {
        id: ClusterId::parse(id).unwrap(),
        resource_id: new_resource_id(),
        engine: "aurora-mysql".into(),
        engine_version: "sqlite-3.46.0".into(),
        status: ClusterStatus::Available,
        backtrack_window: 3600,
        backtrack_enabled_at: Some(now),
        backtrack_ever_enabled: true,
        deletion_protection: false,
        http_endpoint_enabled: true,
        database_name: None,
        master_username: None,
        master_user_verifier: None,
        tags: vec![],
        node_id: "node-a".into(),
        clone_group_id: None,
        restored_from: None,
        created_at: now,
        updated_at: now,
    }
}

fn job(cluster: &Cluster) -> Backtrack {
    let now = Timestamp::now();
    Backtrack {
        id: Uuid::new_v4(),
        cluster_id: cluster.id.clone(),
        volume_id: cluster.resource_id.clone(),
        node_id: cluster.node_id.clone(),
        requested_to: now,
        backtrack_to: now,
        backtracked_from: now,
        created_at: now,
        use_earliest: false,
        force: false,
        status: BacktrackStatus::Pending,
        attempts: 0,
        run_at: now,
        deadline_at: now.plus_secs(60),
        lease_owner: None,
        lease_expires_at: None,
        last_error: None,
        failure_reason: None,
    }
}

async fn store_with_jobs(count: usize) -> (TestDb, Store, Vec<Backtrack>) {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    let mut jobs = Vec::new();
    for i in 0..count {
        let c = cluster(&format!("c{i}"));
        store.insert_cluster(&c).await.unwrap();
        let j = job(&c);
        store
            .start_backtrack(&j, |_| Ok::<_, StoreError>(()))
            .await
            .unwrap();
        jobs.push(j);
    }
    (db, store, jobs)
}

#[tokio::test]
async fn migrations_apply_once_and_reopening_keeps_the_data() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    store.insert_cluster(&cluster("kept")).await.unwrap();
    store.close().await;
    let again = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        again
            .cluster(&ClusterId::parse("kept").unwrap())
            .await
            .unwrap()
            .id
            .as_str(),
        "kept"
    );
}

#[tokio::test]
async fn concurrent_claimers_never_get_the_same_job() {
    let (_db, store, jobs) = store_with_jobs(20).await;
    let now = Timestamp::now();
    let mut claims = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let store = store.clone();
        claims.spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = store
                .claim_backtrack(&format!("w{worker}"), Timestamp::now(), now.plus_secs(60))
                .await
                .unwrap()
            {
                mine.push(job.id);
            }
            mine
        });
    }
    let mut claimed: Vec<Uuid> = claims.join_all().await.into_iter().flatten().collect();
    claimed.sort();
    let mut expected: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    expected.sort();
    assert_eq!(claimed, expected);
}

#[tokio::test]
async fn a_leased_job_is_taken_over_only_after_its_lease_expires() {
    let (_db, store, jobs) = store_with_jobs(1).await;
    let now = Timestamp::now();
    let first = store
        .claim_backtrack("a", now, now.plus_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status, BacktrackStatus::Applying);
    assert_eq!(first.attempts, 1);
    assert!(store
        .claim_backtrack("b", now, now.plus_secs(60))
        .await
        .unwrap()
        .is_none());

    let later = now.plus_millis(301);
    let second = store
        .claim_backtrack("b", later, later.plus_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, jobs[0].id);
    assert_eq!(second.attempts, 2);

    // The first runner's lease is gone: its late result is not recorded.
    let done = JobOutcome::Completed {
        backtrack_to: now,
        backtracked_from: now,
    };
    assert!(!store.finish_backtrack(&first, "a", &done).await.unwrap());
    assert!(store.finish_backtrack(&second, "b", &done).await.unwrap());
    let stored = store
        .backtrack(&first.cluster_id, &first.id.to_string())
        .await
        .unwrap();
    assert_eq!(stored.status, BacktrackStatus::Completed);
    assert_eq!(
        store.cluster(&first.cluster_id).await.unwrap().status,
        ClusterStatus::Available
    );
    // A finished job is never claimed again.
    let much_later = later.plus_secs(3600);
    assert!(store
        .claim_backtrack("c", much_later, much_later.plus_secs(60))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_retried_job_waits_for_its_run_at() {
    let (_db, store, _) = store_with_jobs(1).await;
    let now = Timestamp::now();
    let job = store
        .claim_backtrack("a", now, now.plus_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .retry_backtrack(job.id, "a", now.plus_secs(5), "node down")
        .await
        .unwrap());
    assert!(store
        .claim_backtrack("a", now, now.plus_secs(60))
        .await
        .unwrap()
        .is_none());
    let due = now.plus_secs(6);
    let again = store
        .claim_backtrack("a", due, due.plus_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.last_error.as_deref(), Some("node down"));
    assert!(!store
        .retry_backtrack(job.id, "someone-else", due, "x")
        .await
        .unwrap());
}

#[tokio::test]
async fn a_second_backtrack_for_a_cluster_is_refused_by_the_store() {
    let (_db, store, jobs) = store_with_jobs(1).await;
    let c = store.cluster(&jobs[0].cluster_id).await.unwrap();
    let err = store
        .start_backtrack(&job(&c), |_| Ok::<_, StoreError>(()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err:?}");
    let all = store
        .backtracks(&c.id, &Default::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn a_failed_check_changes_nothing() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    let c = cluster("checked");
    store.insert_cluster(&c).await.unwrap();
    let refused = store
        .update_cluster(&c.id, |c| {
            c.backtrack_window = 1;
            Err(StoreError::InvalidState("no".into()))
        })
        .await;
    assert!(refused.is_err());
    assert_eq!(store.cluster(&c.id).await.unwrap().backtrack_window, 3600);
}

/// Managed PostgreSQL services require TLS: `sslmode` in the URL is honoured, and with
/// `require` the store's connections are encrypted. (PostgreSQL only; the local server has
/// TLS on, with Debian's self-signed certificate.)
#[tokio::test]
async fn postgresql_urls_may_require_tls() {
    let db = TestDb::new().await;
    if !db.url.starts_with("postgres") {
        return;
    }
    let url = format!("{}?sslmode=require", db.url);
    let store = Store::connect(&url).await.unwrap();
    store.insert_cluster(&cluster("over-tls")).await.unwrap();
    let id = backtrack_service::domain::ClusterId::parse("over-tls").unwrap();
    assert_eq!(store.cluster(&id).await.unwrap().id, id);
    store.close().await;

    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let (encrypted,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(encrypted, "sslmode=require gave a plain connection");
    // A server certificate that cannot be verified is refused when verification is asked.
    let verify = format!("{}?sslmode=verify-full", db.url);
    let refused = Store::connect(&verify).await.err().expect("refused");
    assert!(!refused.to_string().is_empty());
}

#[tokio::test]
async fn a_database_made_by_the_old_migration_runner_is_carried_over_and_keeps_its_rows() {
    use sqlx::{Connection, Executor, Row};
    let db = TestDb::new().await;
    let (dir, a, b) = if db.url.starts_with("sqlite") {
        (
            "sqlite",
            include_str!("../../../migrations/sqlite/0001_clusters_and_backtracks.sql"),
            include_str!("../../../migrations/sqlite/0002_metering_and_events.sql"),
        )
    } else {
        (
            "postgres",
            include_str!("../../../migrations/postgres/0001_clusters_and_backtracks.sql"),
            include_str!("../../../migrations/postgres/0002_metering_and_events.sql"),
        )
    };
    // What the store's own runner left: the schema, and schema_migrations recording it.
    sqlx::any::install_default_drivers();
    {
        let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        conn.execute(sqlx::raw_sql(a)).await.unwrap();
        conn.execute(sqlx::raw_sql(b)).await.unwrap();
        conn.execute(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             applied_at BIGINT NOT NULL)",
        )
        .await
        .unwrap();
        conn.execute(
            "INSERT INTO schema_migrations VALUES (1, '0001_clusters_and_backtracks', 0), \
             (2, '0002_metering_and_events', 0)",
        )
        .await
        .unwrap();
    }
    let store = Store::connect(&db.url).await.unwrap();
    store.insert_cluster(&cluster("kept")).await.unwrap();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let applied = sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let versions: Vec<i64> = applied.iter().map(|r| r.get(0)).collect();
    // The two carried over, and the ones after them applied.
    assert_eq!(versions, [1, 2, 3, 4, 5], "{dir}");
    assert!(
        sqlx::query("SELECT 1 FROM schema_migrations")
            .fetch_all(&mut conn)
            .await
            .is_err(),
        "the old table is gone"
    );
    // Opening again applies nothing (checksums match).
    Store::connect(&db.url).await.unwrap();
}

#[tokio::test]
async fn a_restored_cluster_keeps_its_source_and_joins_the_clone_group_in_one_transaction() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    let source = cluster("source");
    store.insert_cluster(&source).await.unwrap();
    let restored = |id: &str, restore_type| {
        let mut c = cluster(id);
        c.status = ClusterStatus::Creating;
        c.restored_from = Some(RestoredFrom {
            cluster: source.id.clone(),
            volume: source.resource_id.clone(),
            at: Timestamp::from_micros(1_700_000_000_123_456),
            restore_type,
        });
        c
    };
    // A refusal by the check leaves nothing: no clone, no group on the source.
    let mut refused = restored("refused", RestoreType::CopyOnWrite);
    let err = store
        .insert_restored(&mut refused, &source.id, true, |_| {
            Err(StoreError::InvalidState("no".into()))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err}");
    assert!(store.cluster(&refused.id).await.is_err());
    assert_eq!(
        store.cluster(&source.id).await.unwrap().clone_group_id,
        None
    );

    let mut first = restored("first", RestoreType::CopyOnWrite);
    store
        .insert_restored(&mut first, &source.id, true, |_| Ok::<_, StoreError>(()))
        .await
        .unwrap();
    let group = store.cluster(&source.id).await.unwrap().clone_group_id;
    assert!(group.is_some());
    let read = store.cluster(&first.id).await.unwrap();
    assert_eq!(read.clone_group_id, group);
    assert_eq!(read.restored_from, first.restored_from);
    // The next clone joins the same group; a full copy joins none.
    let mut second = restored("second", RestoreType::CopyOnWrite);
    store
        .insert_restored(&mut second, &source.id, true, |_| Ok::<_, StoreError>(()))
        .await
        .unwrap();
    assert_eq!(
        store.cluster(&second.id).await.unwrap().clone_group_id,
        group
    );
    let mut copy = restored("copy", RestoreType::FullCopy);
    store
        .insert_restored(&mut copy, &source.id, false, |_| Ok::<_, StoreError>(()))
        .await
        .unwrap();
    let read = store.cluster(&copy.id).await.unwrap();
    assert_eq!(read.clone_group_id, None);
    assert_eq!(
        read.restored_from.unwrap().restore_type,
        RestoreType::FullCopy
    );
    // A name taken is refused and changes nothing.
    let mut again = restored("first", RestoreType::CopyOnWrite);
    let err = store
        .insert_restored(&mut again, &source.id, true, |_| Ok::<_, StoreError>(()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ClusterExists(_)), "{err}");
}
