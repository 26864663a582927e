//! Data-parallel ranks over c10d (PyTorch's own process groups, through `csrc/torch_shim.cpp`):
//! a TCPStore rendezvous and a Gloo group for CPU tensors, with NCCL for CUDA tensors where the
//! shim is built with it.
//!
//! One process is one rank, and runs one job at a time, so the job's group is process-wide
//! ([`join`] sets it, dropping the [`Membership`] clears it). Code deep in a model reaches it
//! through [`normalizer`] without a parameter; with no group every function here is the
//! one-process identity, so single-process training is unchanged.
//!
//! A collective that fails (a rank died, the store is gone) inside loss code cannot return an
//! error there: it is recorded and [`take_error`] hands it to the training loop, which ends the
//! attempt.

mod store;

pub use store::Store;

use crate::torch_shim;
use anyhow::Context;
use std::ffi::CString;
use std::os::raw::{c_char, c_void};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tch::{Kind, Tensor};

/// Gradients are all-reduced in flat buckets of at most this many elements (100 MB of fp32),
/// as DistributedDataParallel's 25 MB buckets but fewer calls on CPU.
const BUCKET_ELEMENTS: i64 = 25 << 20;

fn c_string(s: &str) -> anyhow::Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} contains a NUL byte"))
}

/// A rank of the job's group is gone (it died, or cannot be reached): the attempt cannot go
/// on, but the run can, from its last checkpoint (the worker reports the failure as retryable).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RankLost(pub String);

/// Whether `e` (or a cause of it) is a [`RankLost`].
pub fn is_rank_lost(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<RankLost>())
}

/// A process group (Gloo, and NCCL for CUDA tensors): this process is rank `rank` of `world_size`.
pub struct ProcessGroup {
    ptr: *mut c_void,
    pub rank: usize,
    pub world_size: usize,
    _store: Store,
    /// The first collective that failed where no error could be returned.
    error: Mutex<Option<String>>,
}

// ProcessGroupGloo queues collectives from any thread; each call here waits for its work.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

impl ProcessGroup {
    /// Join the group (blocks until all `world_size` ranks have, or `join_timeout`); each
    /// collective then waits at most `collective_timeout`. `interface_host` is the address this
    /// rank's Gloo transport binds. A rank on a CUDA `device` also gets an NCCL backend for its
    /// CUDA tensors when NCCL is built in ([`backends`]).
    pub fn join(
        store: Store,
        interface_host: &str,
        rank: usize,
        world_size: usize,
        device: tch::Device,
        join_timeout: Duration,
        collective_timeout: Duration,
    ) -> anyhow::Result<ProcessGroup> {
        let host = c_string(interface_host)?;
        let cuda_device = match device {
            tch::Device::Cuda(i) => i as i32,
            _ => -1,
        };
        let mut err = [0 as c_char; torch_shim::ERR_LEN];
        let ptr = unsafe {
            torch_shim::adt_group_new(
                store.ptr,
                host.as_ptr(),
                rank as i32,
                world_size as i32,
                join_timeout.as_millis() as i64,
                collective_timeout.as_millis() as i64,
                cuda_device,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        anyhow::ensure!(
            !ptr.is_null(),
            "rank {rank} of {world_size} could not join the process group ({}): {}",
            backends(device),
            torch_shim::message(&err)
        );
        Ok(ProcessGroup {
            ptr,
            rank,
            world_size,
            _store: store,
            error: Mutex::new(None),
        })
    }

    fn check(&self, code: i32, err: &[c_char], what: &str) -> anyhow::Result<()> {
        if code != 0 {
            return Err(RankLost(format!(
                "{what} across {} ranks failed (did a rank die?): {}",
                self.world_size,
                torch_shim::message(err)
            ))
            .into());
        }
        Ok(())
    }

    /// Sum a contiguous tensor over the ranks, in place.
    pub fn all_reduce_sum(&self, tensor: &mut Tensor) -> anyhow::Result<()> {
        let mut err = [0 as c_char; torch_shim::ERR_LEN];
        let code = unsafe {
            torch_shim::adt_allreduce_sum(
                self.ptr,
                tensor.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        self.check(code, &err, "all-reduce")
    }

    /// Overwrite every rank's `tensor` with rank `root`'s, in place.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> anyhow::Result<()> {
        let mut err = [0 as c_char; torch_shim::ERR_LEN];
        let code = unsafe {
            torch_shim::adt_broadcast(
                self.ptr,
                tensor.as_mut_ptr(),
                root as i32,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        self.check(code, &err, "broadcast")
    }

    /// Every rank's `tensor` (same shape on all ranks), in rank order.
    pub fn all_gather(&self, tensor: &Tensor) -> anyhow::Result<Vec<Tensor>> {
        let mut input = tensor.contiguous();
        let mut outputs: Vec<Tensor> = (0..self.world_size).map(|_| input.empty_like()).collect();
        let mut ptrs: Vec<_> = outputs.iter_mut().map(|t| t.as_mut_ptr()).collect();
        let mut err = [0 as c_char; torch_shim::ERR_LEN];
        let code = unsafe {
            torch_shim::adt_allgather(
                self.ptr,
                input.as_mut_ptr(),
                ptrs.as_mut_ptr(),
                self.world_size as i32,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        self.check(code, &err, "all-gather")?;
        Ok(outputs)
    }

    /// That every rank holds the same `named` tensors as rank 0 (given in the same order on
    /// every rank); an error naming the first that differs otherwise. Each tensor is
    /// fingerprinted by its sum and sum of squares in f64, compared bit for bit: ranks that
    /// apply the same averaged update to the same weights stay identical, so any difference
    /// means they drifted (an update one rank made alone, a non-deterministic kernel) and would
    /// go on training different models under one run.
    pub fn check_same(&self, named: &[(String, Tensor)]) -> anyhow::Result<()> {
        if named.is_empty() {
            return Ok(());
        }
        let prints = tch::no_grad(|| {
            let sums: Vec<Tensor> = named
                .iter()
                .flat_map(|(_, t)| {
                    let t = t.detach().to_kind(Kind::Double);
                    [t.sum(Kind::Double), t.square().sum(Kind::Double)]
                })
                .collect();
            Tensor::stack(&sums, 0).to_device(tch::Device::Cpu)
        });
        let all = self.all_gather(&prints)?;
        let reference = Vec::<f64>::try_from(&all[0])?;
        for (rank, theirs) in all.iter().enumerate().skip(1) {
            let theirs = Vec::<f64>::try_from(theirs)?;
            // one (sum, sum of squares) pair per tensor
            let pairs = reference.chunks(2).zip(theirs.chunks(2));
            let same = |(a, b): &(&[f64], &[f64])| {
                a.iter().zip(*b).all(|(x, y)| x.to_bits() == y.to_bits())
            };
            if let Some((i, (ours, other))) = pairs.enumerate().find(|(_, p)| !same(p)) {
                anyhow::bail!(
                    "the data-parallel ranks have drifted apart: rank {rank} holds a different {} than rank 0 (sum {:e} against {:e}, sum of squares {:e} against {:e})",
                    named[i].0,
                    other[0],
                    ours[0],
                    other[1],
                    ours[1]
                );
            }
        }
        Ok(())
    }

    fn record(&self, e: anyhow::Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| format!("{e:#}"));
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        unsafe { torch_shim::adt_group_free(self.ptr) }
    }
}

/// `cpu` or `cuda:N`, as the command line names devices.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    }
}

/// Whether the shim was built with NCCL (see `build.rs`).
pub fn nccl_built() -> bool {
    unsafe { torch_shim::adt_has_nccl() == 1 }
}

/// The backends a rank on `device` communicates through, for logs and errors.
pub fn backends(device: tch::Device) -> &'static str {
    match (device, nccl_built()) {
        (tch::Device::Cuda(_), true) => "NCCL for CUDA tensors, Gloo for CPU tensors",
        (tch::Device::Cuda(_), false) => "Gloo (this trainer was built without NCCL)",
        _ => "Gloo",
    }
}

/// A group of one rank on `device`: join, all-reduce and broadcast a tensor on the device, check
/// what came back (`trainer doctor`: whether this machine's c10d backends work at all, NCCL on a
/// GPU machine included). Returns what ran.
pub fn one_rank_check(device: tch::Device) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let timeout = Duration::from_secs(60);
    let store = Store::serve("127.0.0.1", 1, timeout)?;
    let group = ProcessGroup::join(store, "127.0.0.1", 0, 1, device, timeout, timeout)?;
    let mut t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(device);
    group.all_reduce_sum(&mut t)?;
    group.broadcast(&mut t, 0)?;
    let back = Vec::<f32>::try_from(t.to_device(tch::Device::Cpu))?;
    anyhow::ensure!(
        back == [1.0, 2.0, 3.0],
        "a 1-rank all-reduce gave {back:?}, not [1, 2, 3]"
    );
    Ok(format!(
        "1-rank all-reduce and broadcast on {} over {}: ok ({:.0} ms)",
        device_name(device),
        backends(device),
        started.elapsed().as_secs_f64() * 1e3
    ))
}

static CURRENT: RwLock<Option<Arc<ProcessGroup>>> = RwLock::new(None);

/// This process's membership of the current job's group; leaving clears it.
pub struct Membership(Arc<ProcessGroup>);

impl Membership {
    pub fn group(&self) -> &ProcessGroup {
        &self.0
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        *CURRENT.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Make `group` the process's group until the returned membership is dropped.
pub fn join(group: ProcessGroup) -> Membership {
    let group = Arc::new(group);
    *CURRENT.write().unwrap_or_else(|p| p.into_inner()) = Some(group.clone());
    Membership(group)
}

/// The current job's group, if it has more than one rank.
pub fn current() -> Option<Arc<ProcessGroup>> {
    CURRENT.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// This process's rank (0 without a group).
pub fn rank() -> usize {
    current().map_or(0, |g| g.rank)
}

pub fn world_size() -> usize {
    current().map_or(1, |g| g.world_size)
}

/// The error of a collective that failed where it could not be returned (see the module doc).
pub fn take_error() -> Option<RankLost> {
    let g = current()?;
    let taken = g.error.lock().unwrap_or_else(|p| p.into_inner()).take();
    taken.map(RankLost)
}

/// A loss normalizer from this rank's `count` (foreground locations, sampled boxes, …):
/// `max(Σ_ranks count, 1) / world_size`. Each rank divides its summed loss by it, so the mean of
/// the ranks' losses, and of their gradients, is the loss of the whole global batch normalised
/// by its whole count: what one process with the global batch computes (`max(count, 1)`).
pub fn normalizer(count: f64) -> f64 {
    let Some(g) = current() else {
        return count.max(1.0);
    };
    let mut t = Tensor::from_slice(&[count]);
    match g.all_reduce_sum(&mut t) {
        Ok(()) => t.double_value(&[0]).max(1.0) / g.world_size as f64,
        Err(e) => {
            g.record(e);
            count.max(1.0)
        }
    }
}

/// The mean over ranks of each value (a step's loss terms, for reporting).
pub fn mean_over_ranks(values: &[f64]) -> anyhow::Result<Vec<f64>> {
    let Some(g) = current() else {
        return Ok(values.to_vec());
    };
    let mut t = Tensor::from_slice(values);
    g.all_reduce_sum(&mut t)?;
    let n = g.world_size as f64;
    Ok(Vec::<f64>::try_from(&t)?
        .into_iter()
        .map(|v| v / n)
        .collect())
}

/// Whether any rank says yes (a stop request that only rank 0 receives).
pub fn any_rank(flag: bool) -> anyhow::Result<bool> {
    let Some(g) = current() else {
        return Ok(flag);
    };
    let mut t = Tensor::from_slice(&[flag as i32 as f64]);
    g.all_reduce_sum(&mut t)?;
    Ok(t.double_value(&[0]) > 0.0)
}

/// Average the gradients of `params` over the ranks, in flat buckets. A parameter that got no
/// gradient on this rank is given zeros first, so that every rank's buckets line up (it is then
/// updated like the others: weight decay and momentum apply, as in DistributedDataParallel).
pub fn average_gradients(params: &[Tensor]) -> anyhow::Result<()> {
    let Some(g) = current() else {
        return Ok(());
    };
    for p in params {
        if !p.grad().defined() {
            // backward of (p · 0).sum() gives p a zero gradient
            (p * 0.0).sum(Kind::Float).backward();
        }
    }
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    let n = g.world_size as f64;
    let mut start = 0;
    while start < grads.len() {
        let (mut end, mut elements) = (start, 0);
        while end < grads.len()
            && (end == start || elements + grads[end].numel() as i64 <= BUCKET_ELEMENTS)
        {
            elements += grads[end].numel() as i64;
            end += 1;
        }
        let views: Vec<Tensor> = grads[start..end].iter().map(|t| t.reshape([-1])).collect();
        let mut flat = Tensor::cat(&views, 0).to_kind(Kind::Float);
        g.all_reduce_sum(&mut flat)?;
        let flat = flat / n;
        let mut offset = 0;
        for grad in &grads[start..end] {
            let len = grad.numel() as i64;
            let mut grad = grad.shallow_clone();
            grad.copy_(&flat.narrow(0, offset, len).view_as(&grad));
            offset += len;
        }
        start = end;
    }
    Ok(())
}

/// With several ranks: that they all hold the same `named` tensors (see
/// [`ProcessGroup::check_same`]), and how many they are. `None` on one process.
pub fn check_replicas_agree(named: &[(String, Tensor)]) -> anyhow::Result<Option<usize>> {
    let Some(g) = current() else {
        return Ok(None);
    };
    g.check_same(named)?;
    Ok(Some(g.world_size))
}

/// Overwrite every rank's `tensors` with rank 0's (the initial parameters, so that ranks start
/// identical whatever their own initialisation drew).
pub fn broadcast_from_rank0(tensors: &[Tensor]) -> anyhow::Result<()> {
    let Some(g) = current() else {
        return Ok(());
    };
    tch::no_grad(|| {
        for t in tensors {
            let mut buf = t.detach().contiguous();
            g.broadcast(&mut buf, 0)?;
            t.detach().copy_(&buf);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_secs(20);
    const CPU: tch::Device = tch::Device::Cpu;

    /// Two ranks in two threads of this process, over a real Gloo group.
    #[test]
    fn two_ranks_sum_broadcast_and_gather_over_gloo() {
        let store = Store::serve("127.0.0.1", 2, SHORT).unwrap();
        let port = store.port();
        let other = std::thread::spawn(move || {
            let store = Store::connect("127.0.0.1", port, 2, SHORT).unwrap();
            let g = ProcessGroup::join(store, "127.0.0.1", 1, 2, CPU, SHORT, SHORT).unwrap();
            let mut t = Tensor::from_slice(&[2.0f32, 20.0]);
            g.all_reduce_sum(&mut t).unwrap();
            let mut b = Tensor::from_slice(&[0.0f32]);
            g.broadcast(&mut b, 0).unwrap();
            let gathered = g.all_gather(&Tensor::from_slice(&[11i64])).unwrap();
            (
                Vec::<f32>::try_from(&t).unwrap(),
                b.double_value(&[0]),
                gathered
                    .iter()
                    .map(|x| x.int64_value(&[0]))
                    .collect::<Vec<_>>(),
            )
        });
        let g = ProcessGroup::join(store, "127.0.0.1", 0, 2, CPU, SHORT, SHORT).unwrap();
        let mut t = Tensor::from_slice(&[1.0f32, 10.0]);
        g.all_reduce_sum(&mut t).unwrap();
        let mut b = Tensor::from_slice(&[7.0f32]);
        g.broadcast(&mut b, 0).unwrap();
        let gathered = g.all_gather(&Tensor::from_slice(&[10i64])).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![3.0, 30.0]);
        assert_eq!(
            gathered
                .iter()
                .map(|x| x.int64_value(&[0]))
                .collect::<Vec<_>>(),
            vec![10, 11]
        );
        let (t1, b1, gathered1) = other.join().unwrap();
        assert_eq!(t1, vec![3.0, 30.0]);
        assert_eq!(b1, 7.0);
        assert_eq!(gathered1, vec![10, 11]);
    }

    /// Same tensors pass; one element one ulp apart on rank 1 is named on both ranks.
    #[test]
    fn ranks_that_drifted_apart_are_caught_and_the_tensor_named() {
        let store = Store::serve("127.0.0.1", 2, SHORT).unwrap();
        let port = store.port();
        let tensors = |nudge: bool| {
            let w = Tensor::from_slice(&[0.25f32, -1.5, 3.0]);
            if nudge {
                let _ = w
                    .get(1)
                    .fill_(f32::from_bits((-1.5f32).to_bits() + 1) as f64);
            }
            vec![
                ("head.bias".to_string(), Tensor::from_slice(&[1.0f32])),
                ("head.weight".to_string(), w),
            ]
        };
        let check = move |g: &ProcessGroup| {
            let rank = g.rank;
            let same = g.check_same(&tensors(false)).map_err(|e| e.to_string());
            let drifted = g.check_same(&tensors(rank == 1)).map_err(|e| e.to_string());
            (same, drifted)
        };
        let other = std::thread::spawn(move || {
            let store = Store::connect("127.0.0.1", port, 2, SHORT).unwrap();
            check(&ProcessGroup::join(store, "127.0.0.1", 1, 2, CPU, SHORT, SHORT).unwrap())
        });
        let zero = check(&ProcessGroup::join(store, "127.0.0.1", 0, 2, CPU, SHORT, SHORT).unwrap());
        for (same, drifted) in [zero, other.join().unwrap()] {
            assert_eq!(same, Ok(()));
            let e = drifted.unwrap_err();
            assert!(
                e.contains("rank 1 holds a different head.weight than rank 0"),
                "{e}"
            );
        }
    }

    #[test]
    fn one_rank_checks_its_backend_and_a_missing_gpu_is_named() {
        let ok = one_rank_check(CPU).unwrap();
        assert!(ok.contains("on cpu over Gloo: ok"), "{ok}");
        if !tch::Cuda::is_available() {
            let e = format!("{:#}", one_rank_check(tch::Device::Cuda(0)).unwrap_err());
            eprintln!("{e}");
            let backend = if nccl_built() { "NCCL" } else { "Gloo" };
            assert!(
                e.contains("could not join the process group") && e.contains(backend),
                "{e}"
            );
        }
    }

    #[test]
    fn a_store_nobody_serves_is_named_in_the_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Store::connect("127.0.0.1", port, 2, Duration::from_secs(2))
            .err()
            .expect("nobody listens there");
        let text = format!("{e:#}");
        assert!(
            text.contains(&format!(
                "cannot reach the rendezvous store at 127.0.0.1:{port}"
            )),
            "{text}"
        );
    }

    #[test]
    fn without_a_group_everything_is_the_one_process_identity() {
        assert!(current().is_none());
        assert_eq!((rank(), world_size()), (0, 1));
        assert_eq!(normalizer(0.0), 1.0);
        assert_eq!(normalizer(5.0), 5.0);
        assert_eq!(mean_over_ranks(&[1.5, 2.5]).unwrap(), vec![1.5, 2.5]);
        assert!(any_rank(true).unwrap() && !any_rank(false).unwrap());
        assert_eq!(check_replicas_agree(&[]).unwrap(), None);
    }
}
