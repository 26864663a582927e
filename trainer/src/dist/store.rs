//! The TCPStore rendezvous the ranks of a job meet through.

use super::c_string;
use crate::torch_shim;
use anyhow::Context;
use std::os::raw::{c_char, c_void};
use std::time::Duration;

/// The TCPStore the ranks meet through.
pub struct Store {
    pub(super) ptr: *mut c_void,
}

// The store is a socket client (or server) that libtorch guards itself.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// Rank 0's store, listening on `host` at a free port ([`Store::port`]).
    pub fn serve(host: &str, world_size: usize, timeout: Duration) -> anyhow::Result<Store> {
        Store::open(host, 0, true, world_size, timeout)
            .with_context(|| format!("starting the rendezvous store on {host}"))
    }

    /// Another rank's connection to the store at `host:port`.
    pub fn connect(
        host: &str,
        port: u16,
        world_size: usize,
        timeout: Duration,
    ) -> anyhow::Result<Store> {
        Store::open(host, port, false, world_size, timeout).with_context(|| {
            format!(
                "cannot reach the rendezvous store at {host}:{port} within {} s",
                timeout.as_secs()
            )
        })
    }

    fn open(
        host: &str,
        port: u16,
        server: bool,
        world_size: usize,
        timeout: Duration,
    ) -> anyhow::Result<Store> {
        let host = c_string(host)?;
        let mut err = [0 as c_char; torch_shim::ERR_LEN];
        let ptr = unsafe {
            torch_shim::adt_store_new(
                host.as_ptr(),
                port,
                server as i32,
                world_size as i32,
                timeout.as_millis() as i64,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        anyhow::ensure!(!ptr.is_null(), "{}", torch_shim::message(&err));
        Ok(Store { ptr })
    }

    pub fn port(&self) -> u16 {
        unsafe { torch_shim::adt_store_port(self.ptr) as u16 }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        unsafe { torch_shim::adt_store_free(self.ptr) }
    }
}
