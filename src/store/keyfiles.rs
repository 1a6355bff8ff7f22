//! Where private-key files live and how their paths are recorded. A key file sits in a
//! folder beside the database (`dkim/`, `tls/`) and is recorded relative to the database's
//! folder, so the record means the same file whichever directory a command runs from, and
//! still means it when the database and its folders move together. A path outside that
//! folder is recorded whole (absolute). On PostgreSQL, the folder is this host's
//! (`StoreConfig::key_dir`).

use super::Store;
use std::path::{Component, Path, PathBuf};

impl Store {
    /// The database's folder, absolute (the current directory joined to a relative `--db`).
    pub fn base_dir(&self) -> PathBuf {
        if let Some(t) = self.pg_target() {
            return t.key_base(self.settings());
        }
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
    /// under the database's folder. A record from before paths were kept this way
    /// ([`is_current_record`] says which) was relative to the folder the command ran in:
    /// when no file is under the database's folder, the same path from the current
    /// folder is tried.
    pub fn key_path(&self, recorded: &str) -> PathBuf {
        let p = Path::new(recorded);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        let beside = self.base_dir().join(p);
        if !beside.exists() && !is_current_record(recorded) {
            if let Ok(here) = std::path::absolute(p) {
                if here.exists() {
                    return here;
                }
            }
        }
        beside
    }
}

/// Whether a recorded key path is of the form this build records: absolute, or
/// `dkim/NAME` or `tls/NAME` under the database's folder. Anything else is an older record,
/// relative to a folder that is not known; a file it names that is not found may still be
/// on disk elsewhere, so it is never taken for destroyed.
pub fn is_current_record(recorded: &str) -> bool {
    let p = Path::new(recorded);
    if p.is_absolute() {
        return true;
    }
    let parts: Vec<Component<'_>> = p.components().collect();
    matches!(
        parts.as_slice(),
        [Component::Normal(kind), Component::Normal(_)] if *kind == "dkim" || *kind == "tls"
    )
}

/// A relative path of plain names only (no `..`, no root), so that joining it to the base
/// stays inside the base.
fn is_plain(rel: &Path) -> bool {
    !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::{is_current_record, is_plain};
    use std::path::Path;

    #[test]
    fn records_of_this_build_are_told_from_older_ones() {
        assert!(is_current_record("tls/cert-1.key"));
        assert!(is_current_record("dkim/example.com.mf1.key"));
        assert!(is_current_record("/var/lib/mailfleet/tls/cert-1.key"));
        assert!(!is_current_record("data/tls/cert-1.key"));
        assert!(!is_current_record("../site/tls/cert-1.key"));
        assert!(!is_current_record("cert-1.key"));
    }

    #[test]
    fn only_plain_relative_paths_are_recorded_relative() {
        assert!(is_plain(Path::new("dkim/example.com.mf1.key")));
        assert!(!is_plain(Path::new("../dkim/x.key")));
        assert!(!is_plain(Path::new("")));
        assert!(!is_plain(Path::new("/etc/x.key")));
    }
}
