//! Make the `trainer` binary find libtorch without LD_LIBRARY_PATH and see CUDA where there is one,
//! and compile the C++ shim for what tch does not bind (autocast, c10d process groups).
//!
//! - rpath to the libtorch `lib/` folder torch-sys built against, so the binary runs as is.
//! - `--no-as-needed -ltorch_cuda -lc10_cuda`: nothing references libtorch_cuda symbols directly,
//!   so the linker would drop it and CUDA would never be registered. LD_LIBRARY_PATH still wins
//!   over the runpath, which is how a GPU machine points the binary at its own libtorch.
use std::path::Path;

fn main() {
    git_stamp();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    compile_shim(Path::new(&lib));
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        // the shim's NCCL path picks the rank's GPU with c10::cuda::set_device
        println!("cargo:rustc-link-arg=-lc10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// `csrc/torch_shim.cpp` against the headers of the libtorch torch-sys linked (the torch wheel's
/// `include/`) and Debian's Gloo headers (`libgloo-dev`; the wheel ships c10d's headers but not
/// Gloo's). With NCCL when the wheel is a CUDA one and the headers ProcessGroupNCCL needs are
/// beside it ([`nccl_includes`]); otherwise CUDA tensors go through Gloo.
fn compile_shim(lib: &Path) {
    println!("cargo:rerun-if-changed=csrc/torch_shim.cpp");
    let include = lib
        .parent()
        .map(|root| root.join("include"))
        .unwrap_or_default();
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/torch_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false);
    match nccl_includes(lib) {
        Some(dirs) => {
            build.define("USE_C10D_NCCL", None);
            for dir in dirs {
                build.include(dir);
            }
        }
        None => println!(
            "cargo:warning=building the c10d shim without NCCL (no CUDA libtorch, or no nccl.h and \
             CUDA headers beside it: scripts/setup.sh installs them); CUDA ranks will all-reduce \
             through Gloo"
        ),
    }
    build.compile("aligndet_torch_shim");
}

/// The include folders ProcessGroupNCCL's header needs, from the pip packages a CUDA torch wheel
/// sits among: `nvidia/nccl` (nccl.h, a dependency of the wheel) and `nvidia/cu13` (the CUDA
/// runtime's headers; its `crt/` and `nv/` come from `nvidia-cuda-crt` and `nvidia-cuda-cccl`,
/// which setup installs). `None` for a CPU libtorch or when one is missing.
fn nccl_includes(lib: &Path) -> Option<Vec<std::path::PathBuf>> {
    let site = lib.parent()?.parent()?;
    let cuda = site.join("nvidia/cu13/include");
    let nccl = site.join("nvidia/nccl/include");
    for needed in [
        lib.join("libtorch_cuda.so"),
        nccl.join("nccl.h"),
        cuda.join("cuda_runtime_api.h"),
        cuda.join("crt/host_config.h"),
        cuda.join("nv/target"),
    ] {
        println!("cargo:rerun-if-changed={}", needed.display());
        if !needed.exists() {
            return None;
        }
    }
    Some(vec![cuda, nccl])
}

/// `ALIGNDET_GIT_COMMIT` (`git rev-parse HEAD`, or `unknown` outside a git checkout or without
/// git) and `ALIGNDET_GIT_DIRTY` (`true` / `false` from `git status --porcelain`, `unknown`)
/// for the runs' reproducibility stamp. Rebuilt when HEAD or the index moves.
fn git_stamp() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty());
    let dirty = match (
        &commit,
        git(&["status", "--porcelain", "--untracked-files=no"]),
    ) {
        (Some(_), Some(status)) => (!status.is_empty()).to_string(),
        _ => "unknown".to_string(),
    };
    println!(
        "cargo:rustc-env=ALIGNDET_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_string())
    );
    println!("cargo:rustc-env=ALIGNDET_GIT_DIRTY={dirty}");
    let mut watched = vec!["HEAD".to_string(), "index".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        // `--git-path`: right in a worktree too (its HEAD and index are its own, refs shared).
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
