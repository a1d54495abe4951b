//! Just enough of SQLite's file format (https://sqlite.org/fileformat.html §1.6) to tell, from
//! a page's bytes, which rows of a rowid table it holds: a page's kind, its cells' rowids, an
//! interior page's children, and the way down a table's b-tree to the leaf that holds (or
//! would hold) a rowid. The preview uses it to find the rows on the pages that changed,
//! without reading the tables around them.

/// A page's bytes, shared: the preview reads interior pages many times.
pub type Page = std::sync::Arc<Vec<u8>>;

/// What a b-tree page is, from its header's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TableInterior,
    TableLeaf,
    IndexInterior,
    IndexLeaf,
    /// Not a b-tree page: a freelist or overflow page, or a page of nothing.
    Other,
}

/// The page header's offset: page 1 starts with the 100-byte database header.
fn header_at(index: u32) -> usize {
    if index == 0 {
        100
    } else {
        0
    }
}

pub fn kind(index: u32, page: &[u8]) -> Kind {
    match page.get(header_at(index)) {
        Some(0x05) => Kind::TableInterior,
        Some(0x0D) => Kind::TableLeaf,
        Some(0x02) => Kind::IndexInterior,
        Some(0x0A) => Kind::IndexLeaf,
        _ => Kind::Other,
    }
}

/// A varint (1 to 9 bytes, big-endian, 7 bits a byte but the ninth) and its length.
fn varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return Some(((value << 8 | u64::from(b)) as i64, 9));
        }
        value = value << 7 | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Some((value as i64, i + 1));
        }
    }
    None
}

fn u16_at(page: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes(page.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(page: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(page.get(at..at + 4)?.try_into().ok()?))
}

/// The offsets of a b-tree page's cells, in key order.
fn cells(index: u32, page: &[u8]) -> Vec<usize> {
    let header = header_at(index);
    let pointers = match kind(index, page) {
        Kind::TableInterior | Kind::IndexInterior => header + 12,
        Kind::TableLeaf | Kind::IndexLeaf => header + 8,
        Kind::Other => return Vec::new(),
    };
    let count = u16_at(page, header + 3).unwrap_or(0);
    (0..count)
        .filter_map(|i| u16_at(page, pointers + 2 * i))
        .filter(|&at| at < page.len())
        .collect()
}

/// The rowids of a table leaf page's rows, in order.
pub fn leaf_rowids(index: u32, page: &[u8]) -> Vec<i64> {
    if kind(index, page) != Kind::TableLeaf {
        return Vec::new();
    }
    cells(index, page)
        .into_iter()
        .filter_map(|at| {
            let (_payload, n) = varint(&page[at..])?;
            varint(&page[at + n..]).map(|(rowid, _)| rowid)
        })
        .collect()
}

/// The child (a 1-based page number) of a table interior page that leads to `rowid`: the left
/// child of the first cell whose key is at least `rowid`, else the right-most pointer.
fn child_toward(index: u32, page: &[u8], rowid: i64) -> Option<u32> {
    for at in cells(index, page) {
        let child = u32_at(page, at)?;
        let (key, _) = varint(page.get(at + 4..)?)?;
        if rowid <= key {
            return Some(child);
        }
    }
    u32_at(page, header_at(index) + 8)
}

/// The children of a table interior page, as 0-based page indexes: each cell's left child,
/// then the right-most pointer.
pub fn children(index: u32, page: &[u8]) -> Vec<u32> {
    if kind(index, page) != Kind::TableInterior {
        return Vec::new();
    }
    let mut out: Vec<u32> = cells(index, page)
        .into_iter()
        .filter_map(|at| u32_at(page, at))
        .collect();
    out.extend(u32_at(page, header_at(index) + 8));
    out.into_iter().filter_map(|n| n.checked_sub(1)).collect()
}

/// The first key of a table interior page.
pub fn first_key(index: u32, page: &[u8]) -> Option<i64> {
    if kind(index, page) != Kind::TableInterior {
        return None;
    }
    let at = *cells(index, page).first()?;
    varint(page.get(at + 4..)?).map(|(key, _)| key)
}

/// Whether the way down from `root` toward `rowid` passes through page `target` (0-based):
/// whether `target` is in that table's tree, for a key it covers.
pub fn passes_through(
    root: u32,
    rowid: i64,
    target: u32,
    read: &mut dyn FnMut(u32) -> Option<Page>,
) -> bool {
    let Some(mut index) = root.checked_sub(1) else {
        return false;
    };
    for _ in 0..32 {
        if index == target {
            return true;
        }
        let Some(page) = read(index) else {
            return false;
        };
        match kind(index, &page) {
            Kind::TableInterior => {
                match child_toward(index, &page, rowid).and_then(|c| c.checked_sub(1)) {
                    Some(child) => index = child,
                    None => return false,
                }
            }
            _ => return false,
        }
    }
    false
}

/// The table leaves under `start` (itself, if it is one), at most 32 levels down, each page
/// visited once.
pub fn leaves_under(start: u32, read: &mut dyn FnMut(u32) -> Option<Page>) -> Vec<u32> {
    let mut leaves = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(start, 0)];
    while let Some((index, depth)) = stack.pop() {
        if depth > 32 || !seen.insert(index) {
            continue;
        }
        let Some(page) = read(index) else { continue };
        match kind(index, &page) {
            Kind::TableLeaf => leaves.push(index),
            Kind::TableInterior => {
                stack.extend(children(index, &page).into_iter().map(|c| (c, depth + 1)))
            }
            _ => {}
        }
    }
    leaves
}

/// The leaf of the table whose b-tree starts at `root` (1-based, as sqlite_master has it)
/// that holds `rowid`, as a 0-based page index; `read` gives a page's bytes. At most 32 levels
/// are followed (SQLite's trees are far shallower), so a malformed page cannot loop.
pub fn leaf_for(root: u32, rowid: i64, read: &mut dyn FnMut(u32) -> Option<Page>) -> Option<u32> {
    let mut index = root.checked_sub(1)?;
    for _ in 0..32 {
        let page = read(index)?;
        match kind(index, &page) {
            Kind::TableLeaf => return Some(index),
            Kind::TableInterior => index = child_toward(index, &page, rowid)?.checked_sub(1)?,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    const PAGE: usize = 4096;

    fn pages(conn: &Connection) -> Vec<Page> {
        let path = conn.path().unwrap().to_string();
        let bytes = std::fs::read(path).unwrap();
        bytes.chunks(PAGE).map(|c| Page::new(c.to_vec())).collect()
    }

    fn database(rows: i64) -> (tempfile_dir::Dir, Connection) {
        let dir = tempfile_dir::Dir::new();
        let conn = Connection::open(dir.0.join("t.db")).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 4096; PRAGMA journal_mode = DELETE;
             CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT);
             CREATE INDEX t_pad ON t(pad);",
        )
        .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for i in 1..=rows {
            tx.execute("INSERT INTO t VALUES (?1, printf('%.300c', 'x'))", [i * 3])
                .unwrap();
        }
        tx.commit().unwrap();
        (dir, conn)
    }

    /// A temporary directory, removed when dropped.
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let path = std::env::temp_dir().join(format!(
                    "btree-test-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn varints_of_every_length_decode() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9]), Some((-1, 9)));
        assert_eq!(varint(&[0x81]), None);
    }

    #[test]
    fn every_rowid_is_on_exactly_one_leaf_and_the_way_down_finds_it() {
        let (_dir, conn) = database(2000);
        let root: u32 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 't'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let pages = pages(&conn);
        let mut seen = Vec::new();
        for (index, page) in pages.iter().enumerate() {
            let rowids = leaf_rowids(index as u32, page);
            let Some(first) = rowids.first() else {
                continue;
            };
            // A leaf is t's when t's way down to its first row ends there (page 1 is
            // sqlite_master's leaf, whose rows are 1 and 2).
            if leaf_for(root, *first, &mut |i| pages.get(i as usize).cloned()) != Some(index as u32)
            {
                assert_eq!(
                    index, 0,
                    "only sqlite_master's page is another table's leaf"
                );
                continue;
            }
            for rowid in rowids {
                let found = leaf_for(root, rowid, &mut |i| pages.get(i as usize).cloned());
                assert_eq!(found, Some(index as u32), "rowid {rowid}");
                seen.push(rowid);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=2000).map(|i| i * 3).collect::<Vec<_>>());
        // A rowid between two rows leads to the leaf where it would go.
        assert!(leaf_for(root, 4, &mut |i| pages.get(i as usize).cloned()).is_some());
        // Index pages hold no table rows.
        assert!(pages
            .iter()
            .enumerate()
            .any(|(i, p)| matches!(kind(i as u32, p), Kind::IndexLeaf | Kind::IndexInterior)));
    }

    #[test]
    fn garbage_is_no_page_of_rows() {
        let junk = Page::new(vec![0xAB; PAGE]);
        assert_eq!(kind(3, &junk), Kind::Other);
        assert!(leaf_rowids(3, &junk).is_empty());
        assert_eq!(leaf_for(4, 1, &mut |_| Some(junk.clone())), None);
        let mut bytes = vec![0u8; PAGE];
        bytes[0] = 0x05; // an interior page whose right-most pointer is itself
        bytes[8..12].copy_from_slice(&4u32.to_be_bytes());
        let looping = Page::new(bytes);
        assert_eq!(leaf_for(4, 1, &mut |_| Some(looping.clone())), None);
        assert_eq!(leaf_for(0, 1, &mut |_| None), None);
    }
}
