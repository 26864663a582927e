//! `trainer doctor`: what libtorch this binary runs against and what it can see.

use serde::Serialize;

/// Facts about the compute environment; also sent to the server when a worker registers.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentReport {
    pub libtorch_version: String,
    pub cuda_available: bool,
    pub cudnn_available: bool,
    pub cuda_device_count: i64,
    pub threads: i32,
}

pub fn environment_report() -> EnvironmentReport {
    EnvironmentReport {
        libtorch_version: libtorch_version(),
        cuda_available: tch::Cuda::is_available(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cuda_device_count: tch::Cuda::device_count(),
        threads: tch::get_num_threads(),
    }
}

/// What this trainer is, for the reproducibility stamp of each run it claims: its version, the
/// git commit it was built from (`build.rs`; `unknown` outside a git checkout) and whether that
/// checkout had uncommitted changes, the libtorch it runs against, and the device.
pub fn trainer_stamp(device: &str) -> aligndet_common::api::TrainerStamp {
    let dirty = match env!("ALIGNDET_GIT_DIRTY") {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    };
    aligndet_common::api::TrainerStamp {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: env!("ALIGNDET_GIT_COMMIT").to_string(),
        git_dirty: dirty,
        libtorch_version: libtorch_version(),
        device: device.to_string(),
    }
}

/// The `torch/version.py` of the libtorch actually loaded, and its folder.
fn loaded_torch_version_py() -> Option<(String, std::path::PathBuf)> {
    let _ = tch::get_num_threads();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let lib_dir = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()))?;
    let text = std::fs::read_to_string(lib_dir.parent()?.join("version.py")).ok()?;
    Some((text, lib_dir))
}

/// A `name = 'value'` line of torch's version.py (`None` for `None`).
fn version_field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = ")))
        .map(|v| v.trim().trim_matches('\'').to_string())
        .filter(|v| v != "None")
}

/// What this worker has, for capability-matched claims: the device kind and its GPUs (model and
/// memory from nvidia-smi where there is one), CUDA and libtorch versions, CPU threads, the free
/// space under `scratch`, and the user's labels.
pub fn capabilities(
    device: tch::Device,
    rank_devices: &[tch::Device],
    labels: Vec<String>,
    scratch: &std::path::Path,
) -> aligndet_common::capabilities::Capabilities {
    use aligndet_common::capabilities::{Capabilities, DeviceKind};
    let gpus: Vec<usize> = match (device, rank_devices) {
        (tch::Device::Cuda(_), [_, ..]) => rank_devices
            .iter()
            .filter_map(|d| match d {
                tch::Device::Cuda(i) => Some(*i),
                _ => None,
            })
            .collect(),
        (tch::Device::Cuda(first), []) => (first..tch::Cuda::device_count() as usize).collect(),
        _ => Vec::new(),
    };
    let smi = nvidia_smi_gpus();
    let used: Vec<&(usize, String, u64)> = smi.iter().filter(|g| gpus.contains(&g.0)).collect();
    let version_py = loaded_torch_version_py();
    Capabilities {
        device: if device.is_cuda() {
            DeviceKind::Cuda
        } else {
            DeviceKind::Cpu
        },
        gpu_model: used.first().map(|g| g.1.clone()),
        gpu_memory_mb: used.iter().map(|g| g.2).min().unwrap_or(0),
        gpu_count: gpus.len() as u32,
        // the CUDA libtorch was built for; meaningless for a worker that trains on the CPU
        cuda_version: version_py
            .as_ref()
            .filter(|_| device.is_cuda())
            .and_then(|(t, _)| version_field(t, "cuda")),
        libtorch_version: libtorch_version(),
        cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()) as u32,
        cache_free_mb: free_mb(scratch),
        labels,
    }
}

/// (index, name, memory in MiB) of every GPU nvidia-smi lists; empty without it.
fn nvidia_smi_gpus() -> Vec<(usize, String, u64)> {
    let Ok(out) = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.to_string(),
                f.get(2)?.parse().ok()?,
            ))
        })
        .collect()
}

/// Free space of the file system holding `path` (the nearest existing folder), in MiB.
fn free_mb(path: &std::path::Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
        .then(|| st.f_bavail as u64 * st.f_frsize as u64 / (1 << 20))
}

/// tch exposes no version call. The libtorch actually loaded (rpath, or LD_LIBRARY_PATH on a GPU
/// machine) is found in /proc/self/maps; the torch package beside its `lib/` has `version.py`.
fn libtorch_version() -> String {
    match loaded_torch_version_py() {
        Some((text, lib_dir)) => format!(
            "{} ({})",
            version_field(&text, "__version__").unwrap_or_else(|| "unknown".to_string()),
            lib_dir.display()
        ),
        None => "unknown (libtorch_cpu.so not mapped, or no version.py beside it)".to_string(),
    }
}

pub fn print_report() -> anyhow::Result<()> {
    let r = environment_report();
    println!("libtorch version : {}", r.libtorch_version);
    println!("CUDA available   : {}", r.cuda_available);
    println!("cuDNN available  : {}", r.cudnn_available);
    println!("CUDA devices     : {}", r.cuda_device_count);
    println!("threads          : {}", r.threads);
    // what a rank on a GPU would use, whether or not this machine has one
    println!(
        "c10d backends    : {}",
        crate::dist::backends(tch::Device::Cuda(0))
    );
    let device = if r.cuda_available {
        tch::Device::Cuda(0)
    } else {
        tch::Device::Cpu
    };
    match crate::dist::one_rank_check(device) {
        Ok(done) => println!("c10d check       : {done}"),
        Err(e) => println!("c10d check       : FAILED: {e:#}"),
    }
    Ok(())
}
