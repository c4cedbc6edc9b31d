//! One process per data center. Two service centers on one database file
//! (a force-deleted pod whose replacement starts before it dies, or a
//! second process started by hand on the same directory) would both assign
//! `seq`s and drain the same outboxes. So the data center holds an exclusive
//! lock on `data-center.lock` (the file name with `.lock`) for as long as the process lives; the kernel drops
//! it when the process exits, however it exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::Error;

/// How often a waiting process tries the lock again.
const RETRY: Duration = Duration::from_millis(200);

/// Takes the lock next to the database at `db`, waiting while another
/// process holds it. The lock lasts as long as the returned file is open.
pub fn acquire(db: &Path) -> Result<File, Error> {
    let (file, path) = open(db)?;
    let mut waiting = false;
    loop {
        match file.try_lock() {
            Ok(()) => {
                if waiting {
                    tracing::info!(path = %path.display(), "data center lock taken");
                }
                return Ok(file);
            }
            Err(TryLockError::WouldBlock) => {
                if !waiting {
                    tracing::warn!(path = %path.display(), "another process holds this data center; waiting until it exits");
                    waiting = true;
                }
                std::thread::sleep(RETRY);
            }
            Err(TryLockError::Error(e)) => return Err(failed(&path, e)),
        }
    }
}

/// Takes the lock next to the database at `db` if no other process holds
/// it, and fails at once if one does: for work on the file that must not
/// run beside a service center (an export), where waiting would hang.
pub fn try_acquire(db: &Path) -> Result<File, Error> {
    let (file, path) = open(db)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::FailedPrecondition(format!(
            "the data center {} is in use: another process (its service center?) holds {}; \
             stop it first",
            db.display(),
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(failed(&path, e)),
    }
}

/// Opens (creating it if needed) the lock file of `db`, mode 0600.
fn open(db: &Path) -> Result<(File, std::path::PathBuf), Error> {
    let path = db.with_extension("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| failed(&path, e))?;
    // Private like the database, also when an older build made it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| failed(&path, e))?;
    Ok((file, path))
}

fn failed(path: &Path, e: std::io::Error) -> Error {
    Error::FailedPrecondition(format!("lock file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_second_holder_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data-center.sqlite");
        let first = acquire(&db).unwrap();
        let (taken, rx) = mpsc::channel();
        let db2 = db.clone();
        let waiter = std::thread::spawn(move || {
            let lock = acquire(&db2).unwrap();
            taken.send(()).unwrap();
            lock
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(600)).is_err(),
            "the lock is not shared"
        );
        drop(first);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("taken once released");
        drop(waiter.join().unwrap());
    }

    #[test]
    fn trying_fails_at_once_while_another_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data-center.sqlite");
        let held = acquire(&db).unwrap();
        let refused = try_acquire(&db).unwrap_err();
        assert!(
            matches!(&refused, Error::FailedPrecondition(m) if m.contains("is in use")),
            "{refused:?}"
        );
        drop(held);
        drop(try_acquire(&db).unwrap());
    }
}
