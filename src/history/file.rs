//! The SQLite file under the history: whether it is still the file the gateway opened.
//!
//! A file deleted or replaced while open fails nothing: SQLite keeps writing into the open,
//! now nameless file, and everything written since is gone at the next start (alert states
//! with it, so firing alerts fire again). The file's identity (device and inode) is taken when
//! the database is opened and compared with what the path names now. PostgreSQL, in-memory
//! databases and non-Unix systems are not watched.

use std::path::{Path, PathBuf};

/// What the path of the history's SQLite file names now, against the file opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// The file opened (or nothing is watched).
    Same,
    /// Nothing: the file was deleted.
    Deleted,
    /// Another file: the file was replaced (moved, restored from a backup).
    Replaced,
}

impl FileState {
    /// What an operator reads in readiness and the log.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Same => "the history database file is the one opened",
            Self::Deleted => {
                "the history database file was deleted while open: what is written now is lost at restart"
            }
            Self::Replaced => {
                "the history database file was replaced while open: what is written now goes to the old file"
            }
        }
    }
}

/// The SQLite file opened: its path and identity.
#[derive(Debug, Clone)]
pub(super) struct WatchedFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl WatchedFile {
    /// The file of the SQLite database at `url`, as it is now; `None` for anything that is not
    /// a file on disk (PostgreSQL, in memory) or on systems without inodes.
    pub(super) fn of(url: &str) -> Option<Self> {
        use std::str::FromStr;
        if !url.starts_with("sqlite:") {
            return None;
        }
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
        let path = options.get_filename().to_path_buf();
        let identity = identity(&path)?;
        Some(Self { path, identity })
    }

    /// What the path names now.
    pub(super) fn state(&self) -> FileState {
        match identity(&self.path) {
            None => FileState::Deleted,
            Some(identity) if identity == self.identity => FileState::Same,
            Some(_) => FileState::Replaced,
        }
    }
}

/// (device, inode) of the file at `path`, if there is one.
#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    metadata.is_file().then(|| (metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn identity(_path: &Path) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_or_replaced_file_is_told_apart_from_the_one_opened() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("h.db");
        std::fs::write(&path, b"one").expect("written");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let watched = WatchedFile::of(&url).expect("a file on disk");
        assert_eq!(watched.state(), FileState::Same);
        // Replaced the way a restore does it: a new file renamed over the old one.
        let other = dir.path().join("restored.db");
        std::fs::write(&other, b"two").expect("written");
        std::fs::rename(&other, &path).expect("renamed");
        assert_eq!(watched.state(), FileState::Replaced);
        std::fs::remove_file(&path).expect("deleted");
        assert_eq!(watched.state(), FileState::Deleted);
        assert!(WatchedFile::of("postgres://u@h/d").is_none());
        assert!(WatchedFile::of("sqlite::memory:").is_none());
    }
}
