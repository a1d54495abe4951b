//! A random SQL workload: DDL (create, drop, alter, index), inserts of every type (big texts
//! and blobs that overflow pages), updates, deletes (sometimes without WHERE), queries, and
//! the occasional VACUUM. Each statement is plain SQL text, so it runs the same on the node
//! and on a plain SQLite file.

use crate::common::Rng;

struct Table {
    name: String,
    columns: Vec<String>,
}

pub struct Workload {
    pub rng: Rng,
    tables: Vec<Table>,
    next_table: u32,
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Workload {
            rng: Rng::new(seed),
            tables: Vec::new(),
            next_table: 0,
        }
    }

    /// The next statement. Writing statements may fail (constraint errors are part of the
    /// workload); they must fail the same way on both sides.
    pub fn statement(&mut self) -> String {
        if self.tables.is_empty() || (self.tables.len() < 4 && self.rng.chance(4)) {
            return self.create_table();
        }
        let roll = self.rng.below(100);
        let t = self.rng.below(self.tables.len() as u64) as usize;
        match roll {
            0..=1 if self.tables.len() > 1 => {
                let table = self.tables.remove(t);
                format!("DROP TABLE {}", table.name)
            }
            2..=3 => {
                let column = format!("c{}", self.tables[t].columns.len());
                self.tables[t].columns.push(column.clone());
                format!("ALTER TABLE {} ADD COLUMN {column}", self.tables[t].name)
            }
            4..=6 => {
                let table = &self.tables[t];
                let column = self.rng.pick(&table.columns).clone();
                format!(
                    "CREATE INDEX IF NOT EXISTS ix_{}_{column} ON {}({column})",
                    table.name, table.name
                )
            }
            7 => "VACUUM".to_string(),
            8..=50 => self.insert(t),
            51..=70 => {
                let column = self.rng.pick(&self.tables[t].columns).clone();
                let value = self.value();
                let (m, r) = (self.rng.below(5) + 1, self.rng.below(5));
                format!(
                    "UPDATE {} SET {column} = {value} WHERE id % {m} = {r}",
                    self.tables[t].name
                )
            }
            71..=84 => {
                let (m, r) = (self.rng.below(6) + 2, self.rng.below(6));
                format!("DELETE FROM {} WHERE id % {m} = {r}", self.tables[t].name)
            }
            85..=86 => format!("DELETE FROM {}", self.tables[t].name),
            _ => {
                let table = &self.tables[t];
                let column = self.rng.pick(&table.columns).clone();
                format!(
                    "SELECT count(*), sum(length({column})), min(id), max(id), typeof(max({column})) FROM {}",
                    table.name
                )
            }
        }
    }

    fn create_table(&mut self) -> String {
        let name = format!("t{}", self.next_table);
        self.next_table += 1;
        let columns: Vec<String> = (0..self.rng.below(4) + 1)
            .map(|i| format!("c{i}"))
            .collect();
        let types = ["", "INTEGER", "TEXT", "BLOB", "REAL"];
        let declared: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} {}", self.rng.pick(&types)))
            .collect();
        let unique = if self.rng.chance(30) {
            ", UNIQUE (c0)"
        } else {
            ""
        };
        let sql = format!(
            "CREATE TABLE {name} (id INTEGER PRIMARY KEY, {}{unique})",
            declared.join(", ")
        );
        self.tables.push(Table { name, columns });
        sql
    }

    fn insert(&mut self, t: usize) -> String {
        let rows = self.rng.below(4) + 1;
        let columns = self.tables[t].columns.clone();
        let values: Vec<String> = (0..rows)
            .map(|_| {
                let row: Vec<String> = columns.iter().map(|_| self.value()).collect();
                format!("({})", row.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.tables[t].name,
            columns.join(", "),
            values.join(", ")
        )
    }

    fn value(&mut self) -> String {
        match self.rng.below(10) {
            0 => "NULL".into(),
            1..=3 => format!("{}", self.rng.next() as i64 >> self.rng.below(60)),
            4 => format!("{:?}", (self.rng.next() % 1_000_000) as f64 / 64.0),
            5..=7 => {
                let len = if self.rng.chance(10) {
                    self.rng.below(6000)
                } else {
                    self.rng.below(60)
                };
                let text: String = (0..len)
                    .map(|_| (b'a' + self.rng.below(26) as u8) as char)
                    .collect();
                format!("'{text}'")
            }
            _ => {
                let len = if self.rng.chance(10) {
                    self.rng.below(9000)
                } else {
                    self.rng.below(40)
                };
                let hex: String = (0..len)
                    .map(|_| format!("{:02x}", self.rng.below(256)))
                    .collect();
                format!("x'{hex}'")
            }
        }
    }
}
