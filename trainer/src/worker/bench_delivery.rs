//! `trainer bench-delivery`: how fast the remote path hands a dataset's images to a loader,
//! against reading the same files from a local folder, in one process with the same readers.
//!
//! The remote path is what a worker does for a job: fetch the annotation file, open the layout,
//! stream the images in (cold: fetched over the API; warm: checked in the cache) while reader
//! threads read every image in a shuffled order through [`crate::data::arrivals::read`], as
//! the data loader does. The clock stops when the last image is read. See
//! `scripts/bench_remote.py`, which starts the server and prints the ratios.

use super::cache::BlobCache;
use super::client::ApiClient;
use super::content::open_dataset;
use aligndet_common::content::DatasetContent;
use anyhow::Context;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchDeliveryArgs {
    /// Server base URL.
    #[arg(long)]
    server: String,
    /// File holding the worker token.
    #[arg(long)]
    token_file: PathBuf,
    /// The dataset by content (`DatasetContent` as JSON, as a claim carries it).
    #[arg(long)]
    content: PathBuf,
    /// The same images as local files, to compare with.
    #[arg(long)]
    local_images: PathBuf,
    /// An empty folder for the caches.
    #[arg(long)]
    scratch: PathBuf,
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Reader threads (the loader's `loader_threads`).
    #[arg(long, default_value_t = 2)]
    readers: usize,
}

pub fn main(args: BenchDeliveryArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.content)
        .with_context(|| format!("reading {}", args.content.display()))?;
    let content: DatasetContent = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {}", args.content.display()))?;
    let token = super::read_token_file(&args.token_file)?;
    let client = ApiClient::new(&args.server, &token)?;
    let mut order: Vec<String> = content.images.iter().map(|i| i.file_name.clone()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(1));

    let cache_dir = args.scratch.join("cache");
    let mut cold = Vec::new();
    for _ in 0..args.repeats.min(3) {
        let _ = std::fs::remove_dir_all(&cache_dir);
        cold.push(remote(&cache_dir, &content, &client, &order, args.readers)?);
    }
    let mut warm = Vec::new();
    let mut local = Vec::new();
    // CPU seconds of the whole process per pass (readers and streamer): steady where other
    // work on the machine makes the wall clock noisy.
    let (mut warm_cpu, mut local_cpu) = (Vec::new(), Vec::new());
    // The layout's files read directly, not through the arrivals: what the folder itself costs.
    let mut layout = Vec::new();
    for _ in 0..args.repeats {
        let run = remote(&cache_dir, &content, &client, &order, args.readers)?;
        warm_cpu.push(run.3);
        let cpu = process_cpu_seconds();
        local.push(timed_reads(&args.local_images, &order, args.readers)?);
        local_cpu.push(process_cpu_seconds() - cpu);
        layout.push(timed_reads(&run.2, &order, args.readers)?);
        warm.push(run);
    }
    println!(
        "{}",
        serde_json::json!({
            "images": order.len(),
            "cold_seconds": cold.iter().map(|c| c.0).collect::<Vec<_>>(),
            "warm_seconds": warm.iter().map(|w| w.0).collect::<Vec<_>>(),
            "warm_open_seconds": warm.iter().map(|w| w.1).collect::<Vec<_>>(),
            "local_seconds": local,
            "warm_cpu_seconds": warm_cpu,
            "local_cpu_seconds": local_cpu,
            "layout_seconds": layout,
        })
    );
    Ok(())
}

/// Seconds from opening the dataset until the readers have read every image, and of those the
/// opening (annotation file, layout, the list of arrivals).
fn remote(
    cache_dir: &Path,
    content: &DatasetContent,
    client: &ApiClient,
    order: &[String],
    readers: usize,
) -> anyhow::Result<(f64, f64, PathBuf, f64)> {
    let cache = BlobCache::open(cache_dir, u64::MAX)?;
    let cpu = process_cpu_seconds();
    let started = Instant::now();
    let dataset = open_dataset(content, &cache, client)?;
    let opened = started.elapsed().as_secs_f64();
    let root = PathBuf::from(&dataset.location.image_root);
    std::thread::scope(|scope| {
        let streamer = scope.spawn(|| dataset.stream.run(&cache, client));
        let read = read_all(&root, order, readers, true);
        let streamed = streamer
            .join()
            .map_err(|_| anyhow::anyhow!("the stream panicked"))?;
        streamed?;
        read
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu;
    cache.release_view(&dataset.view);
    Ok((seconds, opened, root, cpu))
}

fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn timed_reads(root: &Path, order: &[String], readers: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    read_all(root, order, readers, false)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Read every file of `order` under `root`, `readers` threads taking turns (reader k reads
/// positions k, k + readers, …), waiting for each to arrive when `streamed`.
fn read_all(root: &Path, order: &[String], readers: usize, streamed: bool) -> anyhow::Result<()> {
    let readers = readers.max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers)
            .map(|k| {
                scope.spawn(move || -> anyhow::Result<u64> {
                    let mut bytes = 0;
                    for name in order.iter().skip(k).step_by(readers) {
                        let path = root.join(name);
                        let read = if streamed {
                            crate::data::arrivals::read(&path)?
                        } else {
                            std::fs::read(&path)
                                .with_context(|| format!("reading {}", path.display()))?
                        };
                        bytes += read.len() as u64;
                    }
                    Ok(bytes)
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        }
        Ok(())
    })
}
