//! Make the `trainer` binary find libtorch without LD_LIBRARY_PATH and see CUDA where there is one.
//!
//! - rpath to the libtorch `lib/` folder torch-sys built against, so the binary runs as is.
//! - `--no-as-needed -ltorch_cuda`: nothing references libtorch_cuda symbols directly, so the linker
//!   would drop it and CUDA would never be registered. LD_LIBRARY_PATH still wins over the runpath,
//!   which is how a GPU machine points the binary at its own libtorch.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
