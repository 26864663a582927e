//! The C ABI of `csrc/torch_shim.cpp` (compiled by build.rs): autocast and c10d, which tch does
//! not bind. Tensors cross as tch's handles. Used by `dist` and `train::precision` only.

use std::os::raw::{c_char, c_int, c_void};
use torch_sys::C_tensor;

unsafe extern "C" {
    pub fn adt_autocast_enter(device: c_int, dtype: c_int);
    pub fn adt_autocast_exit(device: c_int);

    pub fn adt_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world_size: c_int,
        timeout_ms: i64,
        err: *mut c_char,
        errlen: usize,
    ) -> *mut c_void;
    pub fn adt_store_port(store: *mut c_void) -> c_int;
    pub fn adt_store_free(store: *mut c_void);

    pub fn adt_group_new(
        store: *mut c_void,
        interface_host: *const c_char,
        rank: c_int,
        world_size: c_int,
        join_timeout_ms: i64,
        collective_timeout_ms: i64,
        cuda_device: c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> *mut c_void;
    pub fn adt_group_free(group: *mut c_void);
    pub fn adt_has_nccl() -> c_int;
    pub fn adt_allreduce_sum(
        group: *mut c_void,
        tensor: *mut C_tensor,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn adt_broadcast(
        group: *mut c_void,
        tensor: *mut C_tensor,
        root: c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    pub fn adt_allgather(
        group: *mut c_void,
        input: *mut C_tensor,
        outputs: *mut *mut C_tensor,
        world_size: c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
}

/// Room for the shim's error messages.
pub const ERR_LEN: usize = 2048;

/// The message the shim wrote into `buf`.
pub fn message(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
