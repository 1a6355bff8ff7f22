//! Where private-key files live and how their paths are recorded. A key file sits in a
//! folder beside the database (`dkim/`, `tls/`) and is recorded relative to the database's
//! folder, so the record means the same file whichever directory a command runs from, and
//! still means it when the database and its folders move together. A path outside that
//! folder is recorded whole (absolute).

use super::Store;
use std::path::{Component, Path, PathBuf};

impl Store {
    /// The database's folder, absolute (the current directory joined to a relative `--db`).
    pub fn base_dir(&self) -> PathBuf {
        let db = std::path::absolute(self.path()).unwrap_or_else(|_| self.path().to_path_buf());
        match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("/"),
        }
    }

    /// The folder for key files of one kind (`dkim`, `tls`), beside the database; absolute.
    pub fn key_dir(&self, kind: &str) -> PathBuf {
        self.base_dir().join(kind)
    }

    /// What to record for a key file at `path`: relative to the database's folder when it
    /// lies inside it, else the absolute path.
    pub fn key_record(&self, path: &Path) -> String {
        let base = self.base_dir();
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        match abs.strip_prefix(&base) {
            Ok(rel) if is_plain(rel) => rel.display().to_string(),
            _ => abs.display().to_string(),
        }
    }

    /// The file a recorded key path names: an absolute record as it is, a relative one
    /// under the database's folder (never under the current directory).
    pub fn key_path(&self, recorded: &str) -> PathBuf {
        let p = Path::new(recorded);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }
}

/// A relative path of plain names only (no `..`, no root), so that joining it to the base
/// stays inside the base.
fn is_plain(rel: &Path) -> bool {
    !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::is_plain;
    use std::path::Path;

    #[test]
    fn only_plain_relative_paths_are_recorded_relative() {
        assert!(is_plain(Path::new("dkim/example.com.mf1.key")));
        assert!(!is_plain(Path::new("../dkim/x.key")));
        assert!(!is_plain(Path::new("")));
        assert!(!is_plain(Path::new("/etc/x.key")));
    }
}
