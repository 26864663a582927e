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

/// tch exposes no version call. The libtorch actually loaded (rpath, or LD_LIBRARY_PATH on a GPU
/// machine) is found in /proc/self/maps; the torch package beside its `lib/` has `version.py`.
fn libtorch_version() -> String {
    // Touch libtorch so it is surely mapped before we look.
    let _ = tch::get_num_threads();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let lib_dir = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()));
    let Some(lib_dir) = lib_dir else {
        return "unknown (libtorch_cpu.so not mapped)".to_string();
    };
    let version = lib_dir
        .parent()
        .and_then(|root| std::fs::read_to_string(root.join("version.py")).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches('\'').to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    format!("{version} ({})", lib_dir.display())
}

pub fn print_report() -> anyhow::Result<()> {
    let r = environment_report();
    println!("libtorch version : {}", r.libtorch_version);
    println!("CUDA available   : {}", r.cuda_available);
    println!("cuDNN available  : {}", r.cudnn_available);
    println!("CUDA devices     : {}", r.cuda_device_count);
    println!("threads          : {}", r.threads);
    Ok(())
}
