//! Make the `trainer` binary find libtorch without LD_LIBRARY_PATH and see CUDA where there is one,
//! and compile the C++ shim for what tch does not bind (autocast, c10d process groups).
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
    compile_shim(Path::new(&lib));
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// `csrc/torch_shim.cpp` against the headers of the libtorch torch-sys linked (the torch wheel's
/// `include/`) and Debian's Gloo headers (`libgloo-dev`; the wheel ships c10d's headers but not
/// Gloo's).
fn compile_shim(lib: &Path) {
    println!("cargo:rerun-if-changed=csrc/torch_shim.cpp");
    let include = lib
        .parent()
        .map(|root| root.join("include"))
        .unwrap_or_default();
    cc::Build::new()
        .cpp(true)
        .file("csrc/torch_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile("aligndet_torch_shim");
}
