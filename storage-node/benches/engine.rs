//! Storage-engine benchmark (a program, not a test):
//! `cargo bench -p backtrack-storage-node --bench engine [-- quick] [commits|backtracks|restart]`.
//!
//! Every figure is printed beside a baseline measured in the same run, rounds interleaved so
//! a noisy machine hits both alike:
//! 0. the disk alone: durable 4 KiB writes one at a time, and 8 files at once: what the
//!    commit ratios below are to be read against.
//! 1. commits/s, one row per transaction, one writer: the engine (through its SQL layer) vs a
//!    plain SQLite file in WAL mode with synchronous=FULL. Goal: at least 1.0x. Measured in
//!    steady state (the node recycles log segments as SQLite reuses its WAL) and while the
//!    history still grows (every segment fresh, so zero-filled first).
//! 2. the same with 8 writers on 8 volumes vs 8 plain files. Goal: at least 2x.
//! 3. backtrack latency, request to writable again, on volumes of 10 MB, 100 MB and 1 GB with
//!    100k change records in the window. Goal: under 100 ms, 1 GB within 2x of 10 MB.
//! 4. node restart time with 1M change records in the log, vs reading the log once (what a
//!    recovery that scans the whole log would at least cost).
//!
//! 5. the backtrack preview with 100 changed rows on databases of 10 MB, 100 MB and 1 GB, all
//!    written inside the window (the worst case: every page has versions in the log), vs
//!    reading both states whole (what a preview that diffed the tables would cost). Goal: the
//!    1 GB figure within 2x of the 10 MB one. (A 10 MB database still fits in the log's
//!    in-memory recent writes, so the 1 GB / 100 MB ratio is printed too: the same reads from
//!    the segment files, one b-tree level more.)
//! 6. clone creation at the node (copy-on-write, at an instant of the window) on sources of
//!    10 MB, 100 MB and 1 GB, vs a plain copy of the same database file (what a full copy
//!    costs at least) and our own full copy; and the disk a clone takes, new and after 100
//!    rows changed in it. Goals: under 100 ms, 1 GB within 2x of 10 MB, only its own writes.
//!
//! `quick` shrinks every size tenfold, for a smoke run; naming parts (`commits`, or just `one`
//! or `many` of them; `backtracks`; `restart`) runs only those.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backtrack_storage_node::api::{BacktrackRequest, ExecuteRequest, Value};
use backtrack_storage_node::engine::{Engine, EngineConfig};
use rusqlite::Connection;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 10 } else { 1 };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-engine");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "Backtrack storage engine benchmark{}",
        if quick { " (quick)" } else { "" }
    );

    // `commits`, `backtracks` or `restart` runs only that part.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "quick" && !a.starts_with('-'))
        .collect();
    let part = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if part("commits") || part("one") || part("many") {
        disk(&root, Duration::from_secs(1) / scale as u32);
    }
    if part("commits") || part("one") {
        single_writer(&root, Duration::from_secs(3) / scale as u32);
    }
    if part("commits") || part("many") {
        many_writers(&root, Duration::from_secs(3) / scale as u32);
    }
    if part("backtracks") {
        for mb in [10u64, 100, 1000] {
            backtrack_latency(&root, mb / scale, 100_000 / scale);
        }
    }
    if part("restart") {
        restart(&root, 1_000_000 / scale);
    }
    if part("preview") {
        println!("\n5. backtrack preview with 100 changed rows, the whole database written inside the window:");
        let small = preview_time(&root, 10 / scale.min(10));
        let middle = preview_time(&root, 100 / scale);
        let last = preview_time(&root, 1000 / scale);
        // A 10 MB database fits in the log's 32 MiB of recent writes, kept in memory: its
        // pages are copied, where the larger ones' are read from the segment files.
        println!(
            "   largest / 10 MB = {:.2} (goal: within 2x); largest / 100 MB = {:.2} (both read \
             from the segment files, not the log's in-memory recent writes)",
            last / small,
            last / middle
        );
    }
    if part("clones") {
        println!("\n6. clone creation at the node, the whole source written inside its window:");
        let small = clone_time(&root, 10 / scale.min(10));
        let mut last = small;
        for mb in [100u64, 1000] {
            last = clone_time(&root, mb / scale);
        }
        println!("   largest / 10 MB = {:.2} (goal: within 2x)", last / small);
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn engine(dir: &Path, window: u64, volumes: usize) -> Arc<Engine> {
    let mut config = EngineConfig::new(dir);
    config.maintenance_interval = Duration::from_secs(3600);
    let engine = Engine::open(config).unwrap();
    for v in 0..volumes {
        engine.create_volume(&format!("v{v}"), window).unwrap();
    }
    engine
}

fn sql(text: &str, params: Vec<Value>) -> ExecuteRequest {
    ExecuteRequest {
        sql: text.into(),
        params,
        ..Default::default()
    }
}

fn plain(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch("PRAGMA synchronous = FULL").unwrap();
    conn
}

const TABLE: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v BLOB)";
const INSERT: &str = "INSERT INTO t (k, v) VALUES (?, randomblob(100))";

/// The CPU time this process has used (user + system, all threads), from /proc: ticks of
/// 10 ms, fine over runs of seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A round's commits per second, and the CPU it took: seconds of CPU per second of run
/// (cores busy) and microseconds of CPU per commit.
#[derive(Clone, Copy)]
struct Round {
    rate: f64,
    cores: f64,
    cpu_us_per_commit: f64,
}

/// Commits per second from `writers` threads for `run`, each committing one row at a time.
fn rate(writers: usize, run: Duration, commit: impl Fn(usize, i64) + Sync) -> Round {
    let deadline = Instant::now() + run;
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let commit = &commit;
                s.spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        commit(w, n as i64);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    Round {
        rate: total as f64 / elapsed,
        cores: cpu / elapsed,
        cpu_us_per_commit: cpu * 1e6 / total.max(1) as f64,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How the engine's history behaves during a commit benchmark.
#[derive(Clone, Copy)]
enum History {
    /// A long window: every log segment is new, so each is zero-filled before use.
    Growing,
    /// A one-second window with maintenance: segments are folded, freed and recycled, as in a
    /// node that has run longer than its window (SQLite's WAL likewise reuses its file).
    Steady,
}

fn compare(title: &str, writers: usize, run: Duration, root: &Path, history: History) {
    let dir = root.join(format!(
        "commits-{writers}-{}",
        matches!(history, History::Steady)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = EngineConfig::new(dir.join("node"));
    let window = match history {
        History::Growing => {
            config.maintenance_interval = Duration::from_secs(3600);
            3600
        }
        History::Steady => {
            config.maintenance_interval = Duration::from_secs(1);
            1
        }
    };
    let engine = Engine::open(config).unwrap();
    for v in 0..writers {
        engine.create_volume(&format!("v{v}"), window).unwrap();
        engine
            .execute(&format!("v{v}"), &sql(TABLE, vec![]))
            .unwrap();
    }
    let files: Vec<std::sync::Mutex<Connection>> = (0..writers)
        .map(|i| {
            let conn = plain(&dir.join(format!("plain-{i}.db")));
            conn.execute_batch(TABLE).unwrap();
            std::sync::Mutex::new(conn)
        })
        .collect();
    let ours = |run| {
        rate(writers, run, |w, n| {
            engine
                .execute(&format!("v{w}"), &sql(INSERT, vec![Value::Integer(n)]))
                .unwrap();
        })
    };
    let theirs = |run| {
        rate(writers, run, |w, n| {
            let file = files[w].lock().unwrap();
            file.prepare_cached(INSERT).unwrap().execute([n]).unwrap();
        })
    };
    if let History::Steady = history {
        // Long enough for the log to free and recycle segments, and for SQLite's WAL to
        // checkpoint and start over.
        ours(run * 3);
        theirs(run);
    }
    let stats = engine.log().stats();
    let counters = || {
        use std::sync::atomic::Ordering::Relaxed;
        (
            stats.records.load(Relaxed),
            stats.syncs.load(Relaxed),
            stats.flush_ns.load(Relaxed),
        )
    };
    let (records0, syncs0, flush0) = counters();
    let (mut engine_rounds, mut sqlite_rounds) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        engine_rounds.push(ours(run));
        sqlite_rounds.push(theirs(run));
    }
    let engine_rates: Vec<f64> = engine_rounds.iter().map(|r| r.rate).collect();
    let sqlite_rates: Vec<f64> = sqlite_rounds.iter().map(|r| r.rate).collect();
    let cpu = |rounds: &[Round]| {
        let n = rounds.len() as f64;
        (
            rounds.iter().map(|r| r.cpu_us_per_commit).sum::<f64>() / n,
            rounds.iter().map(|r| r.cores).sum::<f64>() / n,
        )
    };
    let (engine_cpu, engine_cores) = cpu(&engine_rounds);
    let (sqlite_cpu, sqlite_cores) = cpu(&sqlite_rounds);
    let (records, syncs, flush_ns) = counters();
    let (records, syncs, flush_ns) = (records - records0, syncs - syncs0, flush_ns - flush0);
    let engine_seconds = engine_rounds.len() as f64 * run.as_secs_f64();
    println!("\n{title}");
    println!("  rounds, engine:             {}", fmt_rates(&engine_rates));
    println!("  rounds, SQLite WAL+FULL:    {}", fmt_rates(&sqlite_rates));
    println!(
        "  median: engine {:.0}/s, SQLite {:.0}/s  =>  {:.2}x",
        median(engine_rates.clone()),
        median(sqlite_rates.clone()),
        median(engine_rates) / median(sqlite_rates),
    );
    println!(
        "  log ({}): {:.1} commits per durable write, {:.0} µs each, busy {:.0}% of the time",
        if engine.log().is_direct() {
            "O_DIRECT|O_DSYNC writes"
        } else {
            "write + fdatasync"
        },
        records as f64 / syncs.max(1) as f64,
        flush_ns as f64 / 1e3 / syncs.max(1) as f64,
        flush_ns as f64 / 1e9 / engine_seconds * 100.0,
    );
    println!(
        "  CPU: engine {engine_cpu:.0} µs/commit ({engine_cores:.2} cores busy), \
         SQLite {sqlite_cpu:.0} µs/commit ({sqlite_cores:.2} cores busy)"
    );
    engine.close();
}

fn fmt_rates(rates: &[f64]) -> String {
    rates
        .iter()
        .map(|r| format!("{r:>8.0}/s"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn single_writer(root: &Path, run: Duration) {
    compare(
        "(1) commits/s, one row per transaction, one writer; steady state",
        1,
        run,
        root,
        History::Steady,
    );
    compare(
        "(1') the same while the history still grows (fresh, zero-filled segments)",
        1,
        run,
        root,
        History::Growing,
    );
}

fn many_writers(root: &Path, run: Duration) {
    compare(
        "(2) commits/s, 8 writers on 8 volumes vs 8 plain SQLite files; steady state",
        8,
        run,
        root,
        History::Steady,
    );
    compare(
        "(2') the same while the history still grows",
        8,
        run,
        root,
        History::Growing,
    );
}

/// What the disk itself does, to read the commit ratios by: durable 4 KiB writes (write,
/// then fdatasync, over preallocated files, as SQLite's WAL does) from one thread, and from 8
/// threads on 8 files at once. The 8 plain SQLite files of (2) get the second figure's
/// parallelism for free; the engine's one log gets the first, times its commits per write.
fn disk(root: &Path, run: Duration) {
    let dir = root.join("disk");
    std::fs::create_dir_all(&dir).unwrap();
    const SPAN: u64 = 4 << 20;
    let files: Vec<std::fs::File> = (0..8)
        .map(|i| {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(dir.join(format!("f{i}")))
                .unwrap();
            file.write_all_at(&vec![0; SPAN as usize], 0).unwrap();
            file.sync_all().unwrap();
            file
        })
        .collect();
    let page = [7u8; 4096];
    let write = |w: usize, n: i64| {
        let offset = (n as u64 * page.len() as u64) % SPAN;
        files[w].write_all_at(&page, offset).unwrap();
        files[w].sync_data().unwrap();
    };
    let (mut one, mut eight) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        one.push(rate(1, run, write).rate);
        eight.push(rate(8, run, write).rate);
    }
    let (one, eight) = (median(one), median(eight));
    println!("\n(0) the disk: durable 4 KiB writes (write + fdatasync)");
    println!(
        "  one at a time: {one:.0}/s; 8 files at once: {eight:.0}/s  =>  {:.2}x from parallel flushes",
        eight / one
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One row per page: 3,500-byte rows.
const ROW: usize = 3500;

/// Creates volume `v0` with a table `t` of `megabytes` of rows, written inside its window;
/// returns the number of rows.
fn load(engine: &Engine, megabytes: u64) -> u64 {
    engine.create_volume("v0", 3600).unwrap();
    let rows = megabytes * 1_000_000 / ROW as u64;
    engine
        .execute(
            "v0",
            &sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)", vec![]),
        )
        .unwrap();
    let mut loaded = 0;
    while loaded < rows {
        let n = 10_000.min(rows - loaded);
        let load = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO t (v) SELECT randomblob({ROW}) FROM n"
        );
        engine.execute("v0", &sql(&load, vec![])).unwrap();
        loaded += n;
    }
    rows
}

/// Milliseconds to create a clone at the node (median of 5) of a source of `megabytes`,
/// printed beside a plain copy of the same database file and a full copy.
fn clone_time(root: &Path, megabytes: u64) -> f64 {
    let dir = root.join(format!("clone-{megabytes}mb"));
    let mut config = EngineConfig::new(&dir);
    config.maintenance_interval = Duration::from_secs(3600);
    let engine = Engine::open(config).unwrap();
    let rows = load(&engine, megabytes);
    // A plain SQLite file of the same rows, and what copying it durably costs.
    let plain = dir.join("plain.db");
    {
        let conn = Connection::open(&plain).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             INSERT INTO t (v) SELECT randomblob({ROW}) FROM n;"
        ))
        .unwrap();
    }
    let mut copies = Vec::new();
    for i in 0..3 {
        let target = dir.join(format!("copy-{i}.db"));
        let started = Instant::now();
        std::fs::copy(&plain, &target).unwrap();
        std::fs::File::open(&target).unwrap().sync_all().unwrap();
        copies.push(started.elapsed().as_secs_f64() * 1000.0);
        std::fs::remove_file(&target).unwrap();
    }
    let source = |full_copy| backtrack_storage_node::api::CloneSource {
        volume_id: "v0".into(),
        at_us: engine.now_us(),
        full_copy,
    };
    let mut clones = Vec::new();
    let mut new_bytes = 0;
    for i in 0..5 {
        let source = source(false);
        let started = Instant::now();
        let figures = engine
            .create_clone(&format!("c{i}"), 3600, &source)
            .unwrap();
        clones.push(started.elapsed().as_secs_f64() * 1000.0);
        new_bytes = figures.bytes_on_disk;
        // The source goes on between clones.
        engine
            .execute(
                "v0",
                &sql("UPDATE t SET v = randomblob(10) WHERE id = 1", vec![]),
            )
            .unwrap();
    }
    for i in 0..100 {
        let id = i * rows / 100 + 1;
        let update = format!("UPDATE t SET v = randomblob(100) WHERE id = {id}");
        engine.execute("c0", &sql(&update, vec![])).unwrap();
    }
    let written = engine.figures("c0").unwrap().bytes_on_disk;
    let started = Instant::now();
    engine.create_clone("full", 3600, &source(true)).unwrap();
    let full = started.elapsed().as_secs_f64() * 1000.0;
    let file = std::fs::metadata(&plain).unwrap().len();
    let clone = median(clones);
    let copy = median(copies);
    println!(
        "   {megabytes:>5} MB: clone {clone:7.2} ms; plain file copy {copy:8.1} ms ({:.0}x the clone); \
         our full copy {full:8.1} ms; clone's disk: {} KiB new, {} KiB after 100 rows changed \
         (the database is {} KiB)",
        copy / clone,
        new_bytes / 1024,
        written / 1024,
        file / 1024
    );
    engine.close();
    let _ = std::fs::remove_dir_all(&dir);
    clone
}

/// Milliseconds of a preview (median of 5) on a database of `megabytes`, printed beside a
/// whole-table diff of the same two states.
fn preview_time(root: &Path, megabytes: u64) -> f64 {
    let dir = root.join(format!("preview-{megabytes}mb"));
    let mut config = EngineConfig::new(&dir);
    config.maintenance_interval = Duration::from_secs(3600);
    config.log_budget_bytes = 64 << 30;
    let engine = Engine::open(config).unwrap();
    let rows = load(&engine, megabytes);
    let to_us = engine.now_us();
    // 100 changed rows: 50 updated, 25 deleted, 25 inserted, spread over the table.
    for i in 0..50 {
        let id = i * rows / 50 + 1;
        let update = format!("UPDATE t SET v = randomblob(100) WHERE id = {id}");
        engine.execute("v0", &sql(&update, vec![])).unwrap();
    }
    for i in 0..25 {
        let id = i * rows / 25 + 2;
        engine
            .execute(
                "v0",
                &sql(&format!("DELETE FROM t WHERE id = {id}"), vec![]),
            )
            .unwrap();
        engine
            .execute("v0", &sql("INSERT INTO t (v) VALUES (x'01')", vec![]))
            .unwrap();
    }
    let mut previews = Vec::new();
    let mut full = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let preview = engine.preview("v0", to_us, false).unwrap();
        previews.push(started.elapsed().as_secs_f64() * 1000.0);
        let t = &preview.tables[0];
        assert_eq!(
            (t.rows_inserted, t.rows_updated, t.rows_deleted),
            (25, 50, 25)
        );
        let started = Instant::now();
        let then = engine.view_at("v0", to_us).unwrap();
        let now = engine.view_at("v0", engine.now_us()).unwrap();
        let read = |conn: &Connection| -> u64 {
            let mut statement = conn.prepare("SELECT id, v FROM t").unwrap();
            let mut rows = statement.query([]).unwrap();
            let mut sum = 0u64;
            while let Some(row) = rows.next().unwrap() {
                sum += row
                    .get_ref(1)
                    .unwrap()
                    .as_blob()
                    .map_or(0, |b| b.len() as u64);
            }
            sum
        };
        assert_ne!(read(then.connection()), read(now.connection()));
        full.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    previews.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    let (preview, whole) = (previews[2], full[2]);
    println!(
        "   {megabytes:>5} MB: preview {preview:8.2} ms; reading both states whole {whole:9.1} ms ({:.0}x the preview)",
        whole / preview
    );
    engine.close();
    let _ = std::fs::remove_dir_all(&dir);
    preview
}

fn backtrack_latency(root: &Path, megabytes: u64, records: u64) {
    let dir = root.join(format!("backtrack-{megabytes}mb"));
    // Build with window 0, so the bulk load is folded into the base image...
    let engine = engine(&dir, 0, 1);
    let rows = megabytes * 1_000_000 / ROW as u64;
    engine
        .execute(
            "v0",
            &sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)", vec![]),
        )
        .unwrap();
    let started = Instant::now();
    let chunk = 10_000;
    let mut loaded = 0;
    while loaded < rows {
        let n = chunk.min(rows - loaded);
        let load = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO t (v) SELECT randomblob({ROW}) FROM n"
        );
        engine.execute("v0", &sql(&load, vec![])).unwrap();
        loaded += n;
        engine.maintain();
    }
    let load_secs = started.elapsed().as_secs_f64();
    // ...then turn history on and write `records` change records: 50-page transactions of
    // updates spread over the table.
    engine.modify_volume("v0", 3600).unwrap();
    let per_commit = 50u64;
    let commits = records / per_commit;
    let mut times = Vec::with_capacity(commits as usize);
    let mut seed = 7u64;
    for _ in 0..commits {
        let ids: Vec<String> = (0..per_commit)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 33) % rows + 1).to_string()
            })
            .collect();
        let update = format!(
            "UPDATE t SET v = randomblob({ROW}) WHERE id IN ({})",
            ids.join(",")
        );
        engine.execute("v0", &sql(&update, vec![])).unwrap();
        times.push(engine.now_us());
    }
    let figures = engine.figures("v0").unwrap();
    // Backtracks to instants spread over the window, each timed until a write succeeds.
    let mut latencies = Vec::new();
    for i in 0..20 {
        let to_us = times[(i * 37 % 19 + 1) * times.len() / 21];
        let started = Instant::now();
        engine
            .backtrack(
                "v0",
                &BacktrackRequest {
                    backtrack_id: uuid::Uuid::new_v4(),
                    to_us,
                    clamp_to_earliest: false,
                    force: true,
                },
            )
            .unwrap();
        engine
            .execute("v0", &sql("INSERT INTO t (v) VALUES (x'00')", vec![]))
            .unwrap();
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    // Baseline: one write alone, the floor under "writable again".
    let mut writes = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        engine
            .execute("v0", &sql("INSERT INTO t (v) VALUES (x'00')", vec![]))
            .unwrap();
        writes.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let disk = figures.bytes_on_disk as f64 / 1e6;
    latencies.sort_by(f64::total_cmp);
    println!(
        "\n(3) backtrack on {megabytes} MB ({disk:.0} MB on disk, {} change records in the window, loaded in {load_secs:.0} s)",
        figures.change_records_stored
    );
    println!(
        "  request to writable again: median {:.1} ms, p95 {:.1} ms, max {:.1} ms   (one write alone: median {:.1} ms)",
        median(latencies.clone()),
        latencies[latencies.len() * 95 / 100],
        latencies[latencies.len() - 1],
        median(writes)
    );
    engine.close();
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

fn restart(root: &Path, records: u64) {
    let dir = root.join("restart");
    let engine = engine(&dir, 259_200, 1);
    engine
        .execute(
            "v0",
            &sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)", vec![]),
        )
        .unwrap();
    // 1,000 rows of one page each, rewritten 1,000 at a time: 1,000 change records per commit.
    let rows = 1000.min(records);
    engine
        .execute(
            "v0",
            &sql(
                &format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
                     INSERT INTO t (v) SELECT randomblob({ROW}) FROM n"
                ),
                vec![],
            ),
        )
        .unwrap();
    let started = Instant::now();
    while engine.figures("v0").unwrap().change_records_stored < records {
        engine
            .execute(
                "v0",
                &sql(&format!("UPDATE t SET v = randomblob({ROW})"), vec![]),
            )
            .unwrap();
    }
    let build = started.elapsed().as_secs_f64();
    let stored = engine.figures("v0").unwrap().change_records_stored;
    let log_bytes = engine.log().total_bytes();
    engine.close();
    drop(engine);

    let started = Instant::now();
    let engine = Engine::open(EngineConfig::new(&dir)).unwrap();
    let open = started.elapsed().as_secs_f64();
    assert_eq!(engine.figures("v0").unwrap().change_records_stored, stored);
    engine.close();
    drop(engine);

    let started = Instant::now();
    let mut read = 0u64;
    for entry in std::fs::read_dir(dir.join("log")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            read += std::fs::read(&path).unwrap().len() as u64;
        }
    }
    let scan = started.elapsed().as_secs_f64();
    println!(
        "\n(4) restart with {stored} change records ({:.1} GB of log, written in {build:.0} s)",
        log_bytes as f64 / 1e9
    );
    println!(
        "  restart (recover log, replay, index): {:.3} s   vs reading the log once: {scan:.3} s ({:.1} GB)  =>  {:.2}x",
        open,
        read as f64 / 1e9,
        open / scan
    );
    let _ = std::fs::remove_dir_all(&dir);
}
