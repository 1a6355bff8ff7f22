//! Durable commits without the writer waiting on the disk.
//!
//! With `synchronous = "full"` no write is acknowledged before it is on disk. SQLite would
//! do that by syncing the WAL inside every COMMIT, and the one writer would sit idle for
//! the sync: about a quarter of its time in `cargo bench --bench engine`. Instead the
//! writer's connection commits without syncing (SQLite's `NORMAL`), and hands the replies
//! of each committed batch to the syncer, a thread that syncs the WAL and only then sends
//! them. The writer goes on with the next batch meanwhile, and one sync covers every
//! batch committed before it began. Nothing is acknowledged earlier than under SQLite's
//! own FULL; other readers may see a commit up to one sync sooner.
//!
//! A sync that fails leaves what was committed in an unknown state on disk: the batches
//! it covered fail, and the store refuses every later write (as PostgreSQL stops on a
//! failed fsync) until it is opened again.

use super::{Payload, StoreError};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::oneshot;

/// One job's reply and what it is to receive.
pub(super) type Reply = (
    oneshot::Sender<Result<Payload, StoreError>>,
    Result<Payload, StoreError>,
);

/// How the syncer makes the WAL durable; tests put a gate of their own in its place.
pub(crate) type SyncFn = Arc<dyn Fn(&std::fs::File) -> std::io::Result<()> + Send + Sync>;

/// The real sync: the WAL file's data, and its size, on disk.
pub(super) fn sync_data() -> SyncFn {
    Arc::new(|f: &std::fs::File| f.sync_data())
}

#[derive(Default)]
struct State {
    /// Batches handed over, and batches whose replies went out.
    handed: u64,
    done: u64,
    /// Why the store takes no more writes, once a sync failed.
    failed: Option<String>,
}

/// The writer's side of the syncer.
pub(super) struct Syncer {
    tx: Option<mpsc::Sender<Vec<Reply>>>,
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    /// Starts the syncer of the database at `db` (its WAL is `db` + `-wal`).
    pub(super) fn start(db: PathBuf, sync: SyncFn) -> std::io::Result<Syncer> {
        let (tx, rx) = mpsc::channel::<Vec<Reply>>();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let shared = state.clone();
        let mut wal = db.into_os_string();
        wal.push("-wal");
        let thread = std::thread::Builder::new()
            .name("mailfleet-sync".into())
            .spawn(move || run(PathBuf::from(wal), rx, shared, sync))?;
        Ok(Syncer {
            tx: Some(tx),
            state,
            thread: Some(thread),
        })
    }

    /// Why writes are refused, once a sync failed.
    pub(super) fn failed(&self) -> Option<String> {
        lock(&self.state.0).failed.clone()
    }

    /// Hands over the replies of a batch that committed; they go out once a sync that
    /// began after this call has finished.
    pub(super) fn hand(&self, replies: Vec<Reply>) {
        let Some(tx) = &self.tx else {
            return;
        };
        lock(&self.state.0).handed += 1;
        if let Err(mpsc::SendError(replies)) = tx.send(replies) {
            // The syncer is gone (it only ends with the writer): nothing can be confirmed.
            let mut st = lock(&self.state.0);
            st.done += 1;
            drop(st);
            for (reply, _) in replies {
                let _ = reply.send(Err(StoreError::Rejected(
                    "the write committed but could not be confirmed on disk".into(),
                )));
            }
        }
    }

    /// Waits until every batch handed over has had its replies sent.
    pub(super) fn drain(&self) {
        let (m, cv) = &*self.state;
        let mut st = lock(m);
        while st.done < st.handed {
            st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Syncs the WAL, opening it the first time (it exists once a batch has committed).
fn sync_wal(
    wal: &std::path::Path,
    file: &mut Option<std::fs::File>,
    sync: &SyncFn,
) -> std::io::Result<()> {
    let f = match file {
        Some(f) => f,
        None => file.insert(std::fs::File::open(wal)?),
    };
    sync(f)
}

fn run(
    wal: PathBuf,
    rx: mpsc::Receiver<Vec<Reply>>,
    state: Arc<(Mutex<State>, Condvar)>,
    sync: SyncFn,
) {
    let mut file: Option<std::fs::File> = None;
    while let Ok(first) = rx.recv() {
        // Every batch handed over by now committed before this sync begins.
        let mut groups = vec![first];
        while let Ok(more) = rx.try_recv() {
            groups.push(more);
        }
        // After a failed sync nothing is confirmed again: a later sync can succeed
        // although the pages the failed one should have written are gone.
        let before = lock(&state.0).failed.clone();
        let failed = before.or_else(|| {
            sync_wal(&wal, &mut file, &sync).err().map(|e| {
                tracing::error!(error = %e, "syncing the WAL failed; the store takes no more writes");
                format!("the disk did not confirm a commit ({e}); no more writes are taken until mailfleet is started again")
            })
        });
        let count = groups.len() as u64;
        for (reply, result) in groups.into_iter().flatten() {
            let result = match (&failed, result) {
                (Some(why), Ok(_)) => Err(StoreError::Rejected(why.clone())),
                (_, r) => r,
            };
            let _ = reply.send(result);
        }
        let (m, cv) = &*state;
        let mut st = lock(m);
        if st.failed.is_none() {
            st.failed = failed;
        }
        st.done += count;
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::SyncFn;
    use crate::config::{StoreConfig, Synchronous};
    use crate::store::{Access, Store, StoreError};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    async fn open(dir: &tempfile::TempDir, sync: SyncFn, synchronous: Synchronous) -> Store {
        let cfg = StoreConfig {
            synchronous,
            ..StoreConfig::default()
        };
        Store::open_syncing(&dir.path().join("s.db"), &cfg, Access::Create, sync)
            .await
            .expect("open")
            .0
    }

    /// A sync that counts its calls and then does what `then` does.
    fn counting(then: fn(&std::fs::File) -> std::io::Result<()>) -> (SyncFn, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let sync: SyncFn = Arc::new(move |f: &std::fs::File| {
            counted.fetch_add(1, Ordering::SeqCst);
            then(f)
        });
        (sync, calls)
    }

    /// One write of a row to a table of the test's own.
    async fn put(store: &Store, v: i64) -> Result<(), StoreError> {
        store
            .write(move |c| {
                c.execute_batch("CREATE TABLE IF NOT EXISTS t (v INTEGER)")?;
                c.execute("INSERT INTO t (v) VALUES (?)", [v])?;
                Ok(())
            })
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_is_acknowledged_only_after_a_sync_that_began_after_its_commit() {
        let dir = tempfile::tempdir().expect("tmp");
        // The sync waits at a gate the test opens; it says when it is entered.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (open_tx, open_rx) = std::sync::mpsc::channel::<()>();
        let (entered_tx, open_rx) = (Mutex::new(entered_tx), Mutex::new(open_rx));
        let sync: SyncFn = Arc::new(move |f: &std::fs::File| {
            let _ = entered_tx.lock().expect("gate").send(());
            let _ = open_rx.lock().expect("gate").recv();
            f.sync_data()
        });
        let store = open(&dir, sync, Synchronous::Full).await;
        let writer = store.clone();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = done_tx.send(put(&writer, 1).await);
        });
        // The commit is in the WAL and its sync has begun; the write is not acknowledged.
        tokio::task::spawn_blocking(move || {
            entered_rx.recv().expect("the sync is entered");
            entered_rx
        })
        .await
        .expect("join");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            done_rx.try_recv().is_err(),
            "acknowledged before the sync finished"
        );
        // Readers see the commit already.
        let seen: i64 = store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .expect("read");
        assert_eq!(seen, 1);
        open_tx.send(()).expect("open the gate");
        let result = tokio::time::timeout(Duration::from_secs(30), done_rx)
            .await
            .expect("acknowledged once synced")
            .expect("reply");
        assert!(result.is_ok(), "{result:?}");
        // Later writes each wait for a sync of their own.
        for v in 2..5 {
            open_tx.send(()).expect("open the gate");
            put(&store, v).await.expect("write");
        }
    }

    #[tokio::test]
    async fn a_failed_sync_fails_the_write_and_the_store_takes_no_more() {
        let dir = tempfile::tempdir().expect("tmp");
        let (sync, calls) = counting(|_| Err(std::io::Error::other("injected I/O error")));
        let store = open(&dir, sync, Synchronous::Full).await;
        let first = put(&store, 1)
            .await
            .expect_err("a write the disk did not confirm");
        let text = first.to_string();
        assert!(
            text.contains("did not confirm") && text.contains("injected I/O error"),
            "{text}"
        );
        let later = put(&store, 2).await.expect_err("no more writes");
        assert!(later.to_string().contains("no more writes"), "{later}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the refused write was never run"
        );
    }

    #[tokio::test]
    async fn with_synchronous_normal_nothing_waits_for_a_sync() {
        let dir = tempfile::tempdir().expect("tmp");
        let (sync, calls) = counting(std::fs::File::sync_data);
        let store = open(&dir, sync, Synchronous::Normal).await;
        for v in 0..3 {
            put(&store, v).await.expect("write");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    /// SQLite puts the WAL beside the file a symbolic link names, so that is the one the
    /// syncer must sync; beside the link there is nothing to open.
    #[tokio::test]
    async fn a_database_reached_through_a_symbolic_link_is_synced_where_its_wal_is() {
        let real = tempfile::tempdir().expect("tmp");
        let links = tempfile::tempdir().expect("tmp");
        let cfg = StoreConfig::default();
        // Made where it lives, then opened through a link from elsewhere.
        drop(
            Store::open(&real.path().join("s.db"), &cfg)
                .await
                .expect("create"),
        );
        let link = links.path().join("link.db");
        std::os::unix::fs::symlink(real.path().join("s.db"), &link).expect("symlink");
        let (sync, synced) = counting(std::fs::File::sync_data);
        let store = Store::open_syncing(&link, &cfg, Access::Create, sync)
            .await
            .expect("open through the link")
            .0;
        put(&store, 1).await.expect("a write through the link");
        assert_eq!(synced.load(Ordering::SeqCst), 1);
        assert!(real.path().join("s.db-wal").exists());
    }
}
