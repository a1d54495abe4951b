//! A full disk, for real: the engine on a small filesystem of its own (a tmpfs, and ext4 on a
//! loop device, where the log writes with direct I/O), filled up by another file. Commits are
//! refused with a clear error while it is full, nothing acknowledged is lost, and writing
//! resumes by itself once space is freed, with no restart; a restart afterwards recovers
//! exactly the acknowledged rows. Needs root (to mount); skipped with a message otherwise.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use backtrack_storage_node::api::{ErrorCode, Value};
use backtrack_storage_node::engine::{Engine, EngineConfig};
use backtrack_storage_node::testing::SmallDisk;

use crate::common::*;

fn small_config(dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.segment_bytes = 256 << 10;
    config.log_budget_bytes = 64 << 20;
    config.maintenance_interval = Duration::from_secs(3600);
    config
}

fn keys(engine: &Engine) -> BTreeSet<i64> {
    exec(engine, "v", "SELECT k FROM t")
        .rows
        .iter()
        .map(|r| match r[0] {
            Value::Integer(k) => k,
            ref other => panic!("{other:?}"),
        })
        .collect()
}

/// Inserts row `k` (with a page of data, so that segments fill and roll over).
fn insert(
    engine: &Engine,
    k: i64,
) -> Result<(), backtrack_storage_node::engine::volume::VolumeError> {
    try_exec(
        engine,
        "v",
        "INSERT INTO t (k, pad) VALUES (?, randomblob(3000))",
        vec![Value::Integer(k)],
    )
    .map(drop)
}

fn full_disk_is_survived(disk: SmallDisk) {
    let data = disk.mount.join("node");
    let engine = Engine::open(small_config(&data)).unwrap();
    engine.create_volume("v", 3600).unwrap();
    exec(
        &engine,
        "v",
        "CREATE TABLE t (k INTEGER PRIMARY KEY, pad BLOB)",
    );
    let mut acked = BTreeSet::new();
    let mut k = 0;
    for _ in 0..50 {
        k += 1;
        insert(&engine, k).unwrap();
        acked.insert(k);
    }

    let filler = disk.fill();
    // Keep writing until the log runs out of room (the preallocated segments go first).
    let mut refused = 0;
    for _ in 0..2000 {
        k += 1;
        match insert(&engine, k) {
            Ok(()) => {
                acked.insert(k);
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::StorageFull, "a clear error, not {e:?}");
                assert!(e.message.contains("disk is full"), "{e}");
                refused += 1;
                if refused >= 20 {
                    break;
                }
            }
        }
    }
    assert!(refused >= 20, "the disk filled up");
    assert_eq!(
        keys(&engine),
        acked,
        "reads go on, and show what was acknowledged"
    );
    assert!(engine.log().failure().is_some());

    // Space comes back: writes resume by themselves, within seconds, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    k += 1;
    loop {
        match insert(&engine, k) {
            Ok(()) => break,
            Err(e) => {
                assert_eq!(e.code, ErrorCode::StorageFull, "{e:?}");
                assert!(Instant::now() < deadline, "writes did not resume: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    acked.insert(k);
    for _ in 0..200 {
        k += 1;
        insert(&engine, k).unwrap();
        acked.insert(k);
    }
    assert!(engine.log().failure().is_none());
    assert_eq!(keys(&engine), acked);
    assert_eq!(
        exec(&engine, "v", "PRAGMA integrity_check").rows[0][0],
        Value::Text("ok".into())
    );
    // A backtrack and the maintenance work too.
    let now = engine.now_us();
    backtrack(&engine, "v", now).unwrap();
    engine.maintain();

    // A restart recovers exactly what was acknowledged: no lost row, and no refused commit
    // come back to life.
    engine.close();
    drop(engine);
    let engine = Engine::open(small_config(&data)).unwrap();
    assert_eq!(keys(&engine), acked);
    engine.close();
}

/// Eight writers on one volume, whose commits share flushes (each lets the next writer in
/// before its record is durable): when the disk fills, a commit whose record fails is undone
/// with every later one (which may have read it) before any of them is answered. Every
/// acknowledged row is there, and no refused one: not now, not after space comes back, not
/// after a restart.
fn full_disk_is_survived_by_concurrent_writers(disk: SmallDisk) {
    use std::sync::{Arc, Mutex};
    let data = disk.mount.join("node");
    let engine = Arc::new(Engine::open(small_config(&data)).unwrap());
    engine.create_volume("v", 3600).unwrap();
    exec(
        &engine,
        "v",
        "CREATE TABLE t (k INTEGER PRIMARY KEY, pad BLOB)",
    );
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let write = |from: i64, rows: i64, refusals: usize| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (engine, acked) = (engine.clone(), acked.clone());
                std::thread::spawn(move || {
                    let mut refused = 0;
                    for i in 0..rows {
                        let k = from + t * 1_000 + i;
                        match insert(&engine, k) {
                            Ok(()) => {
                                acked.lock().unwrap().insert(k);
                            }
                            Err(e) => {
                                assert!(
                                    e.code == ErrorCode::StorageFull
                                        || e.code == ErrorCode::Unavailable,
                                    "a clear error, not {e:?}"
                                );
                                refused += 1;
                                if refused >= refusals {
                                    break;
                                }
                            }
                        }
                    }
                    refused
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum::<usize>()
    };
    assert_eq!(write(0, 20, 1), 0, "room for the first rows");
    let filler = disk.fill();
    let refused = write(100_000, 1_000, 5);
    assert!(refused >= 8, "the disk filled up ({refused} refusals)");
    assert_eq!(
        keys(&engine),
        *acked.lock().unwrap(),
        "reads show exactly what was acknowledged"
    );
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while insert(&engine, 999_999).is_err() {
        assert!(Instant::now() < deadline, "writes did not resume");
        std::thread::sleep(Duration::from_millis(50));
    }
    acked.lock().unwrap().insert(999_999);
    assert_eq!(write(200_000, 20, 1), 0, "writes resumed");
    let acked = acked.lock().unwrap().clone();
    assert_eq!(keys(&engine), acked);
    assert_eq!(
        exec(&engine, "v", "PRAGMA integrity_check").rows[0][0],
        Value::Text("ok".into())
    );
    engine.close();
    drop(engine);
    let engine = Engine::open(small_config(&data)).unwrap();
    assert_eq!(
        keys(&engine),
        acked,
        "a restart recovers exactly the acknowledged rows"
    );
    engine.close();
}

#[test]
fn a_full_tmpfs_is_survived_by_concurrent_writers_of_one_volume() {
    match SmallDisk::tmpfs(24) {
        Ok(disk) => full_disk_is_survived_by_concurrent_writers(disk),
        Err(why) => eprintln!("skipped: cannot mount a tmpfs here ({why}); run as root"),
    }
}

#[test]
fn a_full_ext4_disk_is_survived_by_concurrent_writers_of_one_volume() {
    match SmallDisk::ext4(32) {
        Ok(disk) => full_disk_is_survived_by_concurrent_writers(disk),
        Err(why) => {
            eprintln!("skipped: cannot mount ext4 on a loop device here ({why}); run as root")
        }
    }
}

#[test]
fn a_full_tmpfs_is_survived_without_losing_or_resurrecting_a_commit() {
    match SmallDisk::tmpfs(24) {
        Ok(disk) => full_disk_is_survived(disk),
        Err(why) => eprintln!("skipped: cannot mount a tmpfs here ({why}); run as root"),
    }
}

#[test]
fn a_full_ext4_disk_is_survived_without_losing_or_resurrecting_a_commit() {
    match SmallDisk::ext4(32) {
        Ok(disk) => full_disk_is_survived(disk),
        Err(why) => {
            eprintln!("skipped: cannot mount ext4 on a loop device here ({why}); run as root")
        }
    }
}
