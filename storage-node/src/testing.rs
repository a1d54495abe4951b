//! Helpers for tests of this crate and of the control plane (the `testing` feature): the
//! address a spawned program announces, and a small filesystem of a test's own, to fill up.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command};

/// The address a spawned `backtrack-storage-node serve` or `backtrack-service serve` names on
/// its first line of output (its stdout piped); `None` if it ended without one.
pub fn try_listening_address(child: &mut Child) -> Option<String> {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .ok()?;
    line.trim()
        .rsplit_once(" listening on ")
        .map(|(_, address)| address.to_string())
}

/// As [`try_listening_address`], for a program that must start.
pub fn listening_address(child: &mut Child) -> String {
    try_listening_address(child).expect("the program announced its address")
}

/// A program a test started, and the address it announced. It is killed (SIGKILL) when
/// dropped, so that a failing assertion never leaves it running.
pub struct Spawned {
    pub child: Child,
    pub url: String,
}

impl Spawned {
    /// Starts `command` (its stdout is taken over) and waits for its address.
    pub fn start(command: &mut Command) -> Spawned {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the program starts");
        let url = listening_address(&mut child);
        Spawned { child, url }
    }

    /// SIGKILL, as a crash would; waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small filesystem mounted for one test, unmounted when dropped.
pub struct SmallDisk {
    pub mount: PathBuf,
    image: Option<PathBuf>,
    _dir: TempDir,
}

impl SmallDisk {
    /// A tmpfs of `mib` MiB, or why there cannot be one here.
    pub fn tmpfs(mib: u64) -> Result<SmallDisk, String> {
        let dir = TempDir::new("small-tmpfs");
        let mount = dir.0.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&mount))?;
        Ok(SmallDisk {
            mount,
            image: None,
            _dir: dir,
        })
    }

    /// ext4 on a loop device of `mib` MiB, or why there cannot be one here.
    pub fn ext4(mib: u64) -> Result<SmallDisk, String> {
        let dir = TempDir::new("small-ext4");
        let image = dir.0.join("disk.img");
        let mount = dir.0.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))?;
        Ok(SmallDisk {
            mount,
            image: Some(image),
            _dir: dir,
        })
    }

    /// Writes a file until the disk is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xA5u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        let small = vec![0xA5u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    match command.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
