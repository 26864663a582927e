//! Images of a dataset that are still arriving while the job already trains.
//!
//! A remote worker starts a job as soon as the annotation file is in its cache; the images
//! stream in behind it (fetched, hash-checked, laid out). Every image read goes through
//! [`wait_for`]: an image that has arrived is read at once; one that has not is asked for first
//! and waited for. A read outside every streamed folder (`trainer run` on local files) costs one
//! check of an empty list.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// The folder being streamed, and which of its files are ready.
pub struct Arrivals {
    root: PathBuf,
    /// File name (relative to `root`) → its position in the streamer's list.
    index: HashMap<String, usize>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    ready: Vec<bool>,
    ready_count: usize,
    /// Files a reader is waiting for, to be fetched before the rest.
    wanted: VecDeque<usize>,
    /// Why the stream stopped before every file arrived.
    failed: Option<String>,
    /// The streamer is gone (finished, failed or stopped).
    closed: bool,
}

impl Arrivals {
    pub fn new(root: &Path, file_names: &[String]) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            root: root.to_path_buf(),
            index: file_names
                .iter()
                .enumerate()
                .map(|(i, name)| (name.clone(), i))
                .collect(),
            state: Mutex::new(State {
                ready: vec![false; file_names.len()],
                ..State::default()
            }),
            changed: Condvar::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// These files are in place and verified.
    pub fn mark_ready(&self, positions: &[usize]) {
        let mut state = self.state();
        for &i in positions {
            if !std::mem::replace(&mut state.ready[i], true) {
                state.ready_count += 1;
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// The files readers are waiting for (each handed out once), for the streamer to take first.
    pub fn take_wanted(&self) -> Vec<usize> {
        let mut state = self.state();
        let wanted: Vec<usize> = state.wanted.drain(..).collect();
        wanted.into_iter().filter(|&i| !state.ready[i]).collect()
    }

    /// The stream ended: `failure` says why when files are still missing.
    pub fn close(&self, failure: Option<String>) {
        let mut state = self.state();
        state.closed = true;
        if state.ready_count < state.ready.len() && state.failed.is_none() {
            state.failed = Some(failure.unwrap_or_else(|| {
                "the dataset stream stopped before this image arrived".to_string()
            }));
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Every file arrived.
    pub fn complete(&self) -> bool {
        let state = self.state();
        state.ready_count == state.ready.len()
    }

    /// Block until the streamer is gone (another job's stream of the same folder).
    pub fn wait_closed(&self) {
        let mut state = self.state();
        while !state.closed {
            state = self
                .changed
                .wait_timeout(state, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn wait(&self, position: usize, name: &str) -> anyhow::Result<()> {
        let mut state = self.state();
        if state.ready[position] {
            return Ok(());
        }
        state.wanted.push_back(position);
        self.changed.notify_all();
        loop {
            if state.ready[position] {
                return Ok(());
            }
            if let Some(why) = &state.failed {
                anyhow::bail!("image {name:?} did not arrive: {why}");
            }
            state = self
                .changed
                .wait_timeout(state, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Block the streamer until a reader wants something or `timeout` passes.
    pub fn wait_for_wants(&self, timeout: Duration) {
        let state = self.state();
        if state.wanted.is_empty() {
            let _ = self.changed.wait_timeout(state, timeout);
        }
    }
}

static STREAMING: RwLock<Vec<Arc<Arrivals>>> = RwLock::new(Vec::new());

/// While held, reads under the arrivals' folder wait for their file.
pub struct Registration(Arc<Arrivals>);

impl Drop for Registration {
    fn drop(&mut self) {
        self.0.close(None);
        STREAMING
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|a| !Arc::ptr_eq(a, &self.0));
    }
}

/// Make reads under `arrivals.root()` wait for their file until the registration is dropped.
pub fn register(arrivals: Arc<Arrivals>) -> Registration {
    STREAMING
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .push(arrivals.clone());
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

/// Wait until the file at `path` has arrived when its folder is being streamed; at once
/// otherwise. Errors name the image and why it cannot arrive.
pub fn wait_for(path: &Path) -> anyhow::Result<()> {
    let found = {
        let open = STREAMING.read().unwrap_or_else(|p| p.into_inner());
        if open.is_empty() {
            return Ok(());
        }
        open.iter().find_map(|a| {
            let name = path.strip_prefix(&a.root).ok()?.to_str()?;
            let position = *a.index.get(name)?;
            Some((a.clone(), position, name.to_string()))
        })
    };
    match found {
        Some((arrivals, position, name)) => arrivals.wait(position, &name),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_waits_for_its_file_and_asks_for_it_first() {
        let root = PathBuf::from("/nonexistent/arrivals-test-a");
        let names: Vec<String> = (0..4).map(|i| format!("{i}.png")).collect();
        let arrivals = Arrivals::new(&root, &names);
        let _registration = register(arrivals.clone());
        assert!(wait_for(Path::new("/elsewhere/0.png")).is_ok());
        let reader = std::thread::spawn({
            let path = root.join("3.png");
            move || wait_for(&path)
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
        assert!(reader.join().expect("reader").is_ok());
        assert!(!arrivals.complete());
        arrivals.mark_ready(&[0, 1, 2]);
        assert!(arrivals.complete());
    }

    #[test]
    fn a_failed_stream_fails_the_reader_with_its_reason() {
        let root = PathBuf::from("/nonexistent/arrivals-test-b");
        let arrivals = Arrivals::new(&root, &["a.png".to_string()]);
        let registration = register(arrivals.clone());
        let reader = std::thread::spawn({
            let path = root.join("a.png");
            move || wait_for(&path)
        });
        arrivals.close(Some("image \"a.png\" changed on the server".into()));
        let err = reader.join().expect("reader").expect_err("failed");
        assert!(err.to_string().contains("changed on the server"), "{err}");
        drop(registration);
        assert!(streaming(&root).is_none());
        assert!(wait_for(&root.join("a.png")).is_ok());
    }
}
