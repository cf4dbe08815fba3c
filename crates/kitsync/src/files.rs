//! Files only kitsync's user may read: the data directory, the SQLite database, the master
//! key and the ISV's RSA private key.
//!
//! What kitsync creates is private from the start (directories 0700, files 0600), so there is
//! no window in which another local user could open it. SQLite creates its `-wal` and `-shm`
//! files with the database file's permissions, so creating the database file 0600 before
//! the pool opens it covers them too. Files that already exist are not changed behind the
//! operator's back: when group or others may read or write one, a warning names it and the
//! `chmod` that fixes it. On other platforms these are plain creations and the checks are
//! skipped.
use std::path::Path;

/// Creates `dir` and its missing parents; those created are 0700. Existing ones are left as
/// they are.
///
/// # Errors
/// The directory cannot be created.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `path` empty and 0600 unless it exists; true when it was created. Never truncates
/// or re-creates an existing file.
///
/// # Errors
/// It cannot be created (other than because it exists).
pub fn create_private_file_if_missing(path: &Path) -> std::io::Result<bool> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Prepares the file of a SQLite URL (`rest` is what follows `sqlite://` or `sqlite:`, query
/// included) before the pool opens it: its directory created 0700, the file created empty
/// 0600 if missing, or a warning when an existing one is open to group or others. In-memory
/// and read-only databases are left to SQLite.
///
/// # Errors
/// The directory or the file cannot be created.
pub fn prepare_sqlite_file(rest: &str) -> std::io::Result<()> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory_or_read_only = query
        .split('&')
        .any(|p| matches!(p, "mode=memory" | "mode=ro"));
    if path.is_empty() || path == ":memory:" || in_memory_or_read_only {
        return Ok(());
    }
    let path = Path::new(path);
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            create_private_dir_all(parent)?;
        }
    }
    if !create_private_file_if_missing(path)? {
        warn_if_exposed(path, "the SQLite database");
    }
    Ok(())
}

/// Logs a warning when group or others may read or write `path` (`what` names it in the
/// message), with the command that fixes it. Silent when it is private, missing, or on
/// platforms without Unix permissions.
pub fn warn_if_exposed(path: &Path, what: &str) {
    #[cfg(unix)]
    if let Some(mode) = exposed_mode(path) {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:04o}"),
            fix = %format!("chmod 600 {}", shell_quote(&path.display().to_string())),
            "{what} can be read or written by other users than kitsync's; restrict it to its \
             owner"
        );
    }
    #[cfg(not(unix))]
    let _ = (path, what);
}

/// The permission bits of `path` when group or others may read or write it.
#[cfg(unix)]
fn exposed_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o066 != 0).then_some(mode)
}

/// `s` as one shell word, so the suggested command can be pasted as it is.
#[cfg(unix)]
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':'));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::{Arc, Mutex};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What `f` logs, as text.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn created_directories_are_owner_only_and_existing_ones_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o755);
        let deep = tmp.path().join("data").join("keys");
        create_private_dir_all(&deep).unwrap();
        assert_eq!(mode(&tmp.path().join("data")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(tmp.path()), 0o755, "an existing parent keeps its mode");
        create_private_dir_all(&deep).unwrap();
    }

    #[test]
    fn created_files_are_0600_and_existing_ones_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("db.sqlite");
        assert!(create_private_file_if_missing(&f).unwrap());
        assert_eq!(mode(&f), 0o600);
        std::fs::write(&f, b"content").unwrap();
        assert!(!create_private_file_if_missing(&f).unwrap());
        assert_eq!(std::fs::read(&f).unwrap(), b"content", "not truncated");
    }

    #[test]
    fn files_open_to_others_are_reported_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("master key");
        std::fs::write(&f, b"k").unwrap();
        for (m, exposed) in [
            (0o600, false),
            (0o400, false),
            (0o700, false),
            (0o640, true),
            (0o620, true),
            (0o604, true),
            (0o602, true),
            (0o644, true),
        ] {
            chmod(&f, m);
            assert_eq!(exposed_mode(&f).is_some(), exposed, "{m:o}");
            let log = logged(|| warn_if_exposed(&f, "the master key"));
            assert_eq!(log.contains("WARN"), exposed, "{m:o}: {log}");
            if exposed {
                assert!(log.contains("the master key"), "{log}");
                assert!(log.contains(&f.display().to_string()), "{log}");
                let fix = format!("chmod 600 '{}'", f.display());
                assert!(log.contains(&fix), "{log}");
            }
        }
        assert!(logged(|| warn_if_exposed(&tmp.path().join("missing"), "x")).is_empty());
        assert_eq!(shell_quote("data/master.key"), "data/master.key");
        assert_eq!(shell_quote("it's here"), r"'it'\''s here'");
    }

    #[test]
    fn sqlite_files_are_created_private_before_sqlite_opens_them() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("data").join("kitsync.sqlite");
        prepare_sqlite_file(&format!("{}?mode=rwc", db.display())).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(db.parent().unwrap()), 0o700);
        // An existing, exposed database is reported, not changed.
        chmod(&db, 0o644);
        let log = logged(|| prepare_sqlite_file(&db.display().to_string()).unwrap());
        assert!(log.contains("the SQLite database"), "{log}");
        assert_eq!(mode(&db), 0o644);
        // Nothing to create for these.
        let before: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        prepare_sqlite_file(":memory:").unwrap();
        prepare_sqlite_file(&format!("{}/ro.sqlite?mode=ro", tmp.path().display())).unwrap();
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), before.len());
    }

    /// The reason the database file is created first: SQLite gives its WAL and shared-memory
    /// files the database file's permissions.
    #[tokio::test]
    async fn sqlite_wal_files_inherit_the_private_mode() {
        use sea_orm::ConnectionTrait as _;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data").join("kitsync.sqlite");
        let rest = format!("{}?mode=rwc", path.display());
        prepare_sqlite_file(&rest).unwrap();
        let db = migrations::connect(&format!("sqlite://{rest}"), 1)
            .await
            .unwrap();
        db.execute_unprepared("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let f = tmp
                .path()
                .join("data")
                .join(format!("kitsync.sqlite{suffix}"));
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        db.close().await.unwrap();
    }
}
