// What tch does not bind and the trainer needs: autocast (mixed precision) and c10d process
// groups (data-parallel ranks over Gloo). A C ABI over the libtorch of the torch wheel; every
// libtorch exception becomes an error message, never an abort.
//
// Tensors cross as tch's handles (`torch::Tensor*`). Collectives are synchronous: each call
// waits for its `Work` before returning (for NCCL: the current CUDA stream waits for it, so what
// runs after on that stream, a copy to the host included, sees the result).
//
// A group has a Gloo backend for CPU tensors and, for ranks on CUDA devices when the shim was
// built with NCCL (USE_C10D_NCCL, see build.rs), an NCCL backend for CUDA tensors: each
// collective goes to the backend of its tensor's device, as PyTorch's "cpu:gloo,cuda:nccl".

#include <ATen/autocast_mode.h>
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace {

void write_error(const std::exception& e, char* err, size_t errlen) {
  if (err == nullptr || errlen == 0) return;
  std::strncpy(err, e.what(), errlen - 1);
  err[errlen - 1] = '\0';
}

at::DeviceType device_type(int device) {
  return device == 1 ? at::DeviceType::CUDA : at::DeviceType::CPU;
}

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> gloo;
  // Set for ranks on a CUDA device when NCCL is built in.
  c10::intrusive_ptr<c10d::Backend> nccl;
  // Each collective's own limit (the group's is the rendezvous').
  std::chrono::milliseconds collective_timeout;

  c10d::Backend& backend_for(const at::Tensor& t) {
    return (nccl && t.is_cuda()) ? *nccl : *gloo;
  }
};

}  // namespace

extern "C" {

// --- autocast -----------------------------------------------------------------------------------

// dtype: 0 = bfloat16, 1 = float16. Autocast state is per thread, as in PyTorch.
void adt_autocast_enter(int device, int dtype) {
  const auto type = device_type(device);
  at::autocast::set_autocast_dtype(type, dtype == 1 ? at::kHalf : at::kBFloat16);
  at::autocast::set_autocast_enabled(type, true);
  at::autocast::increment_nesting();
}

void adt_autocast_exit(int device) {
  at::autocast::set_autocast_enabled(device_type(device), false);
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
}

// --- c10d ---------------------------------------------------------------------------------------

// The rendezvous store. The server (rank 0) binds `port` (0: any free port, see adt_store_port)
// and does not wait for the others here: the group's construction does.
void* adt_store_new(const char* host, uint16_t port, int is_server, int world_size,
                    int64_t timeout_ms, char* err, size_t errlen) {
  try {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = world_size;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    return new c10::intrusive_ptr<c10d::TCPStore>(std::move(store));
  } catch (const std::exception& e) {
    write_error(e, err, errlen);
    return nullptr;
  }
}

int adt_store_port(void* store) {
  return (*static_cast<c10::intrusive_ptr<c10d::TCPStore>*>(store))->getPort();
}

void adt_store_free(void* store) { delete static_cast<c10::intrusive_ptr<c10d::TCPStore>*>(store); }

// Whether NCCL is built in (1) or CUDA tensors go through Gloo (0).
int adt_has_nccl() {
#ifdef USE_C10D_NCCL
  return 1;
#else
  return 0;
#endif
}

// A group of `world_size` ranks meeting through `store`; blocks until all have joined Gloo or
// `join_timeout_ms` passed. Each collective then waits at most `collective_timeout_ms`.
// `interface_host` is the address this rank's Gloo device binds. `cuda_device` >= 0: this rank's
// GPU, whose tensors go through NCCL when it is built in (its communicator is made at the first
// collective, which every rank calls).
void* adt_group_new(void* store, const char* interface_host, int rank, int world_size,
                    int64_t join_timeout_ms, int64_t collective_timeout_ms, int cuda_device,
                    char* err, size_t errlen) {
  try {
    auto timeout = std::chrono::milliseconds(join_timeout_ms);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname(std::string(interface_host)));
    c10::intrusive_ptr<c10d::Store> base = *static_cast<c10::intrusive_ptr<c10d::TCPStore>*>(store);
    // Each backend keeps its keys apart in the one store.
    auto gloo_store = c10::make_intrusive<c10d::PrefixStore>("gloo", base);
    c10::intrusive_ptr<c10d::Backend> gloo =
        c10::make_intrusive<c10d::ProcessGroupGloo>(gloo_store, rank, world_size, opts);
    c10::intrusive_ptr<c10d::Backend> nccl;
#ifdef USE_C10D_NCCL
    if (cuda_device >= 0) {
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(cuda_device));
      auto nccl_opts = c10d::ProcessGroupNCCL::Options::create();
      nccl_opts->timeout = std::chrono::milliseconds(collective_timeout_ms);
      auto nccl_store = c10::make_intrusive<c10d::PrefixStore>("nccl", base);
      nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(nccl_store, rank, world_size, nccl_opts);
    }
#else
    (void)cuda_device;
#endif
    return new Group{base, gloo, nccl, std::chrono::milliseconds(collective_timeout_ms)};
  } catch (const std::exception& e) {
    write_error(e, err, errlen);
    return nullptr;
  }
}

void adt_group_free(void* group) { delete static_cast<Group*>(group); }

// Sum `tensor` over all ranks, in place.
int adt_allreduce_sum(void* group, at::Tensor* tensor, char* err, size_t errlen) {
  try {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> ts{*tensor};
    c10d::AllreduceOptions opts;
    opts.timeout = g->collective_timeout;
    g->backend_for(*tensor).allreduce(ts, opts)->wait();
    return 0;
  } catch (const std::exception& e) {
    write_error(e, err, errlen);
    return -1;
  }
}

// Copy rank `root`'s `tensor` into every rank's, in place.
int adt_broadcast(void* group, at::Tensor* tensor, int root, char* err, size_t errlen) {
  try {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> ts{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g->collective_timeout;
    g->backend_for(*tensor).broadcast(ts, opts)->wait();
    return 0;
  } catch (const std::exception& e) {
    write_error(e, err, errlen);
    return -1;
  }
}

// Every rank's `input` into `outputs[r]` (world_size tensors of the input's shape).
int adt_allgather(void* group, at::Tensor* input, at::Tensor** outputs, int world_size, char* err,
                  size_t errlen) {
  try {
    std::vector<std::vector<at::Tensor>> outs(1);
    for (int r = 0; r < world_size; ++r) outs[0].push_back(*outputs[r]);
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> ins{*input};
    c10d::AllgatherOptions opts;
    opts.timeout = g->collective_timeout;
    g->backend_for(*input).allgather(outs, ins, opts)->wait();
    return 0;
  } catch (const std::exception& e) {
    write_error(e, err, errlen);
    return -1;
  }
}

}  // extern "C"
