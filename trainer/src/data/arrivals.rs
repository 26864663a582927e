//! Images of a dataset that are still arriving while the job already trains.
//!
//! A remote worker starts a job as soon as the annotation file is in its cache; the images
//! stream in behind it (fetched, hash-checked, laid out). Every image read goes through
//! [`read`]: an image that has arrived is read at once; one that has not is asked for first
//! and waited for. A read outside every streamed folder (`trainer run` on local files) costs one
//! check of an empty list.

use crossbeam_utils::CachePadded;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// Whether the file at a position of the list, opened with this stat data, is already the right
/// one (a reader then needs no streamer: a warm cache's file checked by its stat data).
pub type Vouch = Box<dyn Fn(usize, &std::fs::Metadata) -> bool + Send + Sync>;

/// The folder being streamed, and which of its files are ready.
pub struct Arrivals {
    root: PathBuf,
    /// `root` and a separator, as bytes: every read compares its path with it.
    prefix: Vec<u8>,
    vouch: Option<Vouch>,
    /// File name (relative to `root`) → its position in the streamer's list.
    index: FxHashMap<String, usize>,
    /// Atomics, not the mutex: a warm layout's readers mark thousands of files ready a second
    /// and must not queue on one lock.
    ready: Vec<AtomicBool>,
    /// On a cache line of its own: every vouched read bumps it, and the fields beside it are
    /// read on every read by the other reader threads.
    ready_count: CachePadded<AtomicUsize>,
    readers_waiting: AtomicUsize,
    streamer_waiting: AtomicBool,
    state: Mutex<State>,
    /// Readers (and [`Arrivals::wait_closed`]) wait here for files to arrive.
    arrived: Condvar,
    /// The streamer waits here for readers' wants. Each is notified only when someone waits.
    wants: Condvar,
}

#[derive(Default)]
struct State {
    /// Files a reader is waiting for, to be fetched before the rest.
    wanted: VecDeque<usize>,
    /// Why the stream stopped before every file arrived.
    failed: Option<String>,
    /// The streamer is gone (finished, failed or stopped).
    closed: bool,
}

impl Arrivals {
    pub fn new(root: &Path, file_names: Vec<String>, vouch: Option<Vouch>) -> Arc<Arrivals> {
        let mut prefix = root.as_os_str().as_bytes().to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        Arc::new(Arrivals {
            root: root.to_path_buf(),
            prefix,
            vouch,
            ready: file_names.iter().map(|_| AtomicBool::new(false)).collect(),
            index: file_names
                .into_iter()
                .enumerate()
                .map(|(i, name)| (name, i))
                .collect(),
            ready_count: CachePadded::new(AtomicUsize::new(0)),
            readers_waiting: AtomicUsize::new(0),
            streamer_waiting: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            wants: Condvar::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// These files are in place and verified.
    pub fn mark_ready(&self, positions: &[usize]) {
        for &i in positions {
            if !self.ready[i].swap(true, Ordering::SeqCst) {
                self.ready_count.fetch_add(1, Ordering::SeqCst);
            }
        }
        // Taking the lock orders this notification after a waiter's check of `ready`.
        if self.readers_waiting.load(Ordering::SeqCst) > 0 {
            let _state = self.state();
            self.arrived.notify_all();
        }
        // The last file in: a streamer waiting for wants has nothing left to do.
        if self.streamer_waiting.load(Ordering::SeqCst) && self.complete() {
            let _state = self.state();
            self.wants.notify_all();
        }
    }

    /// The files readers are waiting for (each handed out once), for the streamer to take first.
    pub fn take_wanted(&self) -> Vec<usize> {
        let wanted: Vec<usize> = self.state().wanted.drain(..).collect();
        wanted.into_iter().filter(|&i| !self.is_ready(i)).collect()
    }

    /// The stream ended: `failure` says why when files are still missing.
    pub fn close(&self, failure: Option<String>) {
        let mut state = self.state();
        state.closed = true;
        if !self.complete() && state.failed.is_none() {
            state.failed = Some(failure.unwrap_or_else(|| {
                "the dataset stream stopped before this image arrived".to_string()
            }));
        }
        drop(state);
        self.arrived.notify_all();
        self.wants.notify_all();
    }

    /// How many files are ready.
    pub fn ready_count(&self) -> usize {
        self.ready_count.load(Ordering::SeqCst)
    }

    /// Wake whoever waits (the streamer, told to stop).
    pub fn wake(&self) {
        let _state = self.state();
        self.wants.notify_all();
    }

    /// Every file arrived.
    pub fn complete(&self) -> bool {
        self.ready_count() == self.ready.len()
    }

    /// Block until the streamer is gone (another job's stream of the same folder).
    pub fn wait_closed(&self) {
        self.wait_until(self.state(), |state| state.closed.then_some(()));
    }

    /// Wait for arrivals (counted as a waiting reader, so that they are notified) until `done`
    /// answers.
    fn wait_until<R>(
        &self,
        mut state: MutexGuard<'_, State>,
        mut done: impl FnMut(&State) -> Option<R>,
    ) -> R {
        self.readers_waiting.fetch_add(1, Ordering::SeqCst);
        let outcome = loop {
            if let Some(outcome) = done(&state) {
                break outcome;
            }
            state = self
                .arrived
                .wait_timeout(state, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        self.readers_waiting.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    /// The position of the file at `path` when it lies in this folder. A byte comparison, not
    /// `Path::strip_prefix` (component by component): it runs once per image read.
    fn position_of(&self, path: &Path) -> Option<usize> {
        let name = path
            .as_os_str()
            .as_bytes()
            .strip_prefix(self.prefix.as_slice())?;
        self.index.get(std::str::from_utf8(name).ok()?).copied()
    }

    /// Whether the file at `position` is ready now, without waiting.
    pub fn is_ready(&self, position: usize) -> bool {
        self.ready[position].load(Ordering::SeqCst)
    }

    fn wait(&self, position: usize, name: &str) -> anyhow::Result<()> {
        let mut state = self.state();
        state.wanted.push_back(position);
        if self.streamer_waiting.load(Ordering::SeqCst) {
            self.wants.notify_all();
        }
        self.wait_until(state, |state| {
            if self.is_ready(position) {
                return Some(Ok(()));
            }
            let why = state.failed.as_ref()?;
            Some(Err(anyhow::anyhow!("image {name:?} did not arrive: {why}")))
        })
    }

    /// Block the streamer until a reader wants something or `timeout` passes.
    pub fn wait_for_wants(&self, timeout: Duration) {
        let state = self.state();
        // Raised before `complete` is read: the reader marking the last file reads it after.
        self.streamer_waiting.store(true, Ordering::SeqCst);
        if state.wanted.is_empty() && !state.closed && !self.complete() {
            let _ = self
                .wants
                .wait_timeout(state, timeout)
                .unwrap_or_else(|p| p.into_inner());
        }
        self.streamer_waiting.store(false, Ordering::SeqCst);
    }
}

static STREAMING: RwLock<Vec<Arc<Arrivals>>> = RwLock::new(Vec::new());
/// Bumped whenever `STREAMING` changes: each reader thread keeps its own copy of the list and
/// takes it again only then (the lock's counter would otherwise bounce between the readers'
/// cores on every image).
static STREAMING_CHANGES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STREAMING_SEEN: std::cell::RefCell<(usize, Vec<Arc<Arrivals>>)> =
        const { std::cell::RefCell::new((usize::MAX, Vec::new())) };
}

fn change_streaming(change: impl FnOnce(&mut Vec<Arc<Arrivals>>)) {
    let mut open = STREAMING.write().unwrap_or_else(|p| p.into_inner());
    change(&mut open);
    STREAMING_CHANGES.fetch_add(1, Ordering::SeqCst);
}

/// This thread's copy of the arrivals being streamed now.
fn with_streaming<R>(f: impl FnOnce(&[Arc<Arrivals>]) -> R) -> R {
    STREAMING_SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        let changes = STREAMING_CHANGES.load(Ordering::SeqCst);
        if seen.0 != changes {
            let open = STREAMING.read().unwrap_or_else(|p| p.into_inner());
            *seen = (changes, open.clone());
        }
        f(&seen.1)
    })
}

/// While held, reads under the arrivals' folder wait for their file.
pub struct Registration(Arc<Arrivals>);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.close(None);
        change_streaming(|open| open.retain(|a| !Arc::ptr_eq(a, &self.0)));
    }
}

/// Make reads under `arrivals.root()` wait for their file until the registration is dropped.
pub fn register(arrivals: Arc<Arrivals>) -> Registration {
    change_streaming(|open| open.push(arrivals.clone()));
    Registration(arrivals)
}

/// The arrivals of `root` being streamed now, if any (another job reading the same dataset).
pub fn streaming(root: &Path) -> Option<Arc<Arrivals>> {
    STREAMING
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|a| a.root == root)
        .cloned()
}

/// The `len` bytes of `file` (its vouched size) in one `read(2)` where the kernel allows,
/// straight into the vector's spare capacity. `Read::read_to_end` costs two or three more system
/// calls per image here (it asks the file for its size and position again, or without a size
/// hint reads in 8 KiB steps, and probes for the end once more).
fn read_exactly(file: &std::fs::File, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut bytes: Vec<u8> = Vec::with_capacity(len);
    while bytes.len() < len {
        let filled = bytes.len();
        let spare = &mut bytes.spare_capacity_mut()[..len - filled];
        // SAFETY: read(2) writes at most `spare.len()` bytes into memory the vector owns
        // (its spare capacity); the length grows only by what the kernel reports written.
        let read = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        match read {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the file ended after {} of {len} bytes", bytes.len()),
                ));
            }
            // SAFETY: the kernel initialised these `n` bytes of the spare capacity.
            n if n > 0 => unsafe { bytes.set_len(filled + n as usize) },
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(bytes)
}

/// Where a read finds its file.
enum Found {
    /// In place (or not streamed at all): read it.
    Here,
    /// Vouched for and read.
    Read(Vec<u8>),
    /// Still on its way: wait for it (outside this thread's list of arrivals).
    Coming(Arc<Arrivals>, usize),
}

/// The bytes of the file at `path`: at once when its folder is not being streamed or the file
/// is there and vouched for (checked on the open file: no second lookup by name); otherwise
/// once it has arrived. Errors name the image and why it cannot arrive.
pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let read_whole = || std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let found = with_streaming(|open| -> anyhow::Result<Found> {
        let Some((arrivals, position)) = open.iter().find_map(|a| Some((a, a.position_of(path)?)))
        else {
            return Ok(Found::Here);
        };
        if arrivals.is_ready(position) {
            return Ok(Found::Here);
        }
        if let Some(bytes) = arrivals.read_vouched(position, path)? {
            return Ok(Found::Read(bytes));
        }
        Ok(Found::Coming(arrivals.clone(), position))
    })?;
    let (arrivals, position) = match found {
        Found::Here => return read_whole(),
        Found::Read(bytes) => return Ok(bytes),
        Found::Coming(arrivals, position) => (arrivals, position),
    };
    let name = path.strip_prefix(&arrivals.root).unwrap_or(path);
    arrivals.wait(position, &name.display().to_string())?;
    read_whole()
}

impl Arrivals {
    /// The bytes of the file at `position` when it is there and vouched for, checked on the
    /// open file (no second lookup by name).
    fn read_vouched(&self, position: usize, path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
        use anyhow::Context;
        let Some(vouch) = &self.vouch else {
            return Ok(None);
        };
        let Ok(file) = std::fs::File::open(path) else {
            return Ok(None);
        };
        let Ok(meta) = file.metadata() else {
            return Ok(None);
        };
        if !vouch(position, &meta) {
            return Ok(None);
        }
        self.mark_ready(&[position]);
        let bytes = read_exactly(&file, meta.len() as usize)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(tag: &str, names: &[&str]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("arrivals-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("temp dir");
        for name in names {
            std::fs::write(root.join(name), name.as_bytes()).expect("write");
        }
        root
    }

    #[test]
    fn a_reader_waits_for_its_file_and_asks_for_it_first() {
        let names: Vec<String> = (0..4).map(|i| format!("{i}.png")).collect();
        let root = folder("a", &["0.png", "1.png", "2.png", "3.png"]);
        let arrivals = Arrivals::new(&root, names, None);
        let _registration = register(arrivals.clone());
        let reader = std::thread::spawn({
            let path = root.join("3.png");
            move || read(&path)
        });
        let wanted = loop {
            let w = arrivals.take_wanted();
            if !w.is_empty() {
                break w;
            }
            arrivals.wait_for_wants(Duration::from_millis(50));
        };
        assert_eq!(wanted, vec![3]);
        assert!(!reader.is_finished());
        arrivals.mark_ready(&[3]);
        assert_eq!(reader.join().expect("reader").expect("read"), b"3.png");
        assert!(!arrivals.complete());
        arrivals.mark_ready(&[0, 1, 2]);
        assert!(arrivals.complete());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_vouched_file_is_read_at_once_and_a_failed_stream_fails_the_rest() {
        let root = folder("b", &["good.png", "bad.png"]);
        let names = vec!["good.png".to_string(), "bad.png".to_string()];
        let vouch: Vouch = Box::new(|position, _meta| position == 0);
        let arrivals = Arrivals::new(&root, names, Some(vouch));
        let registration = register(arrivals.clone());
        assert_eq!(read(&root.join("good.png")).expect("vouched"), b"good.png");
        assert_eq!(arrivals.ready_count(), 1);
        let reader = std::thread::spawn({
            let path = root.join("bad.png");
            move || read(&path)
        });
        arrivals.close(Some("image \"bad.png\" changed on the server".into()));
        let err = reader.join().expect("reader").expect_err("failed");
        assert!(err.to_string().contains("changed on the server"), "{err}");
        drop(registration);
        assert!(streaming(&root).is_none());
        assert_eq!(
            read(&root.join("bad.png")).expect("not streamed"),
            b"bad.png"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
