// A CPU model of CUDA streams and NCCL point-to-point, so that
// nccl_model_test runs the real comm/nccl/nccl_comm.cc (compiled against
// the headers beside this file) with ranks as threads of one process, on a
// machine without GPUs. Built as a shared library: the test links it for
// the CUDA calls and nccl_comm.cc dlopens it as "libnccl" (same instance).
//
// What is modelled, and how closely:
// - "Device" memory is host memory recorded with the current device of
//   the allocating thread (cudaPointerGetAttributes reports it); pinned
//   host memory is recorded as such. The model has RINGATTN_MODEL_GPUS
//   devices (default 8).
// - A stream is an in-order queue executed by its own thread; an event
//   marks a place in it; cudaStreamQuery / cudaEventQuery poll;
//   cudaStreamWaitEvent queues a wait for the event's latest record, as
//   CUDA does. ModelLaunch runs a "kernel" (any function) in stream order
//   and ModelSetJitter delays every stream operation by a random amount,
//   so that a missing cross-stream dependency races for real.
// - NCCL: communicators of one clique meet by unique id; non-blocking
//   ones report ncclInProgress until every rank has joined. ncclGroupEnd
//   and ncclAllReduce return ncclInProgress every other call and enqueue
//   the work at the next ncclCommGetAsyncError (the path nccl_comm.cc must
//   handle). A group is one stream operation: its sends are queued on
//   their (sender, receiver) channel in issue order, its receives take the
//   channel's oldest message (counts must agree, else the communicator
//   gets an asynchronous error), and the group ends when all its receives
//   are done and all its sends consumed: sends are rendezvous, the
//   conservative reading of NCCL (a real small send may finish earlier).
//   Operations of a communicator run in its stream's order, so a receive
//   that no one matches holds up everything after it, as in NCCL.
// - ncclCommAbort (and ncclCommRevoke, which nccl_comm.cc calls first when
//   the library has it) wakes the communicator's blocked operations and
//   withdraws its unconsumed sends; peers are not told (they wait on).
// Communicator objects are never freed (operations queued on a stream may
// still name them).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda_runtime_api.h"
#include "nccl.h"

// ---- CUDA ----------------------------------------------------------------------

namespace {
std::atomic<int> g_jitter_us{0};
std::atomic<int> g_copy_us{0};
std::atomic<bool> g_copies_held{false};
}  // namespace

struct ModelStream {
  int device = -1;  // -1: the legacy default stream, of every device
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> queue;
  bool busy = false;
  bool stop = false;
  std::thread worker;

  ModelStream() {
    worker = std::thread([this] {
      std::minstd_rand rng(static_cast<unsigned>(reinterpret_cast<uintptr_t>(this)));
      std::unique_lock<std::mutex> lock(mu);
      for (;;) {
        cv.wait(lock, [this] { return stop || !queue.empty(); });
        if (queue.empty()) return;  // stop
        std::function<void()> op = std::move(queue.front());
        queue.pop_front();
        busy = true;
        lock.unlock();
        if (const int jitter = g_jitter_us.load(std::memory_order_relaxed); jitter > 0) {
          std::this_thread::sleep_for(std::chrono::microseconds(rng() % (jitter + 1)));
        }
        op();
        lock.lock();
        busy = false;
        cv.notify_all();
      }
    });
  }
  ~ModelStream() {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [this] { return queue.empty() && !busy; });
      stop = true;
      cv.notify_all();
    }
    worker.join();
  }
  void Push(std::function<void()> op) {
    std::lock_guard<std::mutex> lock(mu);
    queue.push_back(std::move(op));
    cv.notify_all();
  }
  bool Idle() {
    std::lock_guard<std::mutex> lock(mu);
    return queue.empty() && !busy;
  }
  void Sync() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [this] { return queue.empty() && !busy; });
  }
};

struct ModelEvent {
  int device = 0;
  std::mutex mu;
  std::condition_variable cv;
  unsigned long recorded = 0;
  unsigned long reached = 0;
  std::chrono::steady_clock::time_point at;  // when the latest record was reached
  // As in CUDA, an event destroyed while stream operations still name it
  // (a record not reached, a wait not passed) goes when the last one ends.
  int users = 0;
  bool destroyed = false;
};

namespace {
// Ends one stream operation's use of `event`; `lock` holds event->mu.
void EndUse(ModelEvent* event, std::unique_lock<std::mutex>& lock) {
  const bool last = --event->users == 0 && event->destroyed;
  lock.unlock();
  if (last) delete event;
}
}  // namespace

namespace {

struct Allocation {
  size_t bytes;
  cudaMemoryType type;
  int device;
};

std::mutex g_mem_mu;
std::map<const char*, Allocation> g_allocations;
thread_local int t_device = 0;

// Stream 0: the legacy default stream (one for all devices here; made on
// first use and never destroyed).
ModelStream* Legacy(cudaStream_t stream) {
  static ModelStream* legacy = new ModelStream;
  return stream != nullptr ? stream : legacy;
}

int ModelGpus() {
  const char* v = std::getenv("RINGATTN_MODEL_GPUS");
  return v != nullptr ? std::atoi(v) : 8;
}

void* Allocate(size_t bytes, cudaMemoryType type) {
  char* p = static_cast<char*>(std::malloc(bytes > 0 ? bytes : 1));
  std::lock_guard<std::mutex> lock(g_mem_mu);
  g_allocations[p] = Allocation{bytes, type, t_device};
  return p;
}

void Release(void* ptr) {
  if (ptr == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    g_allocations.erase(static_cast<const char*>(ptr));
  }
  std::free(ptr);
}

}  // namespace

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    default: return "cudaErrorInvalidValue";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
cudaError_t cudaGetLastError() { return cudaSuccess; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = ModelGpus();
  return *count > 0 ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= ModelGpus()) return cudaErrorInvalidValue;
  t_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = t_device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "Model GPU");
  prop->major = 9;
  prop->minor = 0;
  prop->totalGlobalMem = size_t{80} << 30;
  prop->uuid.bytes[0] = static_cast<char>(device + 1);
  return cudaSuccess;
}
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  *least = 0;
  *greatest = -5;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned, int) {
  *stream = new ModelStream;
  (*stream)->device = t_device;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  *stream = new ModelStream;
  (*stream)->device = t_device;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Legacy(stream)->Sync();
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  return Legacy(stream)->Idle() ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) {
  *event = new ModelEvent;
  (*event)->device = t_device;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  std::unique_lock<std::mutex> lock(event->mu);
  event->destroyed = true;
  if (event->users > 0) return cudaSuccess;
  lock.unlock();
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  stream = Legacy(stream);
  // As in CUDA: an event is recorded only on a stream of its own device.
  if (stream->device >= 0 && stream->device != event->device) return cudaErrorInvalidResourceHandle;
  unsigned long mark;
  {
    std::lock_guard<std::mutex> lock(event->mu);
    mark = ++event->recorded;
    ++event->users;
  }
  stream->Push([event, mark] {
    std::unique_lock<std::mutex> lock(event->mu);
    if (event->reached < mark) {
      event->reached = mark;
      event->at = std::chrono::steady_clock::now();
    }
    event->cv.notify_all();
    EndUse(event, lock);
  });
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  std::unique_lock<std::mutex> lock(event->mu);
  const unsigned long mark = event->recorded;
  event->cv.wait(lock, [&] { return event->reached >= mark; });
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  std::chrono::steady_clock::time_point a, b;
  {
    std::lock_guard<std::mutex> lock(start->mu);
    if (start->reached != start->recorded || start->recorded == 0) return cudaErrorNotReady;
    a = start->at;
  }
  {
    std::lock_guard<std::mutex> lock(end->mu);
    if (end->reached != end->recorded || end->recorded == 0) return cudaErrorNotReady;
    b = end->at;
  }
  *ms = std::chrono::duration<float, std::milli>(b - a).count();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  stream = Legacy(stream);
  unsigned long mark;
  {
    std::lock_guard<std::mutex> lock(event->mu);
    mark = event->recorded;  // the latest record at the call, as in CUDA
    if (mark == 0) return cudaSuccess;  // never recorded: nothing to wait for
    ++event->users;
  }
  stream->Push([event, mark] {
    std::unique_lock<std::mutex> lock(event->mu);
    event->cv.wait(lock, [&] { return event->reached >= mark; });
    EndUse(event, lock);
  });
  return cudaSuccess;
}
void ModelLaunch(cudaStream_t stream, std::function<void()> op) {
  Legacy(stream)->Push(std::move(op));
}
void ModelSetJitter(int max_us) { g_jitter_us.store(max_us < 0 ? 0 : max_us); }
void ModelSetCopyTime(int max_us) { g_copy_us.store(max_us < 0 ? 0 : max_us); }
void ModelHoldCopies(bool hold) { g_copies_held.store(hold); }
cudaError_t cudaEventQuery(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(event->mu);
  return event->reached == event->recorded ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = Allocate(bytes, cudaMemoryTypeDevice);
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  Release(ptr);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  *ptr = Allocate(bytes, cudaMemoryTypeHost);
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* ptr) {
  Release(ptr);
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t) {
  *ptr = Allocate(bytes, cudaMemoryTypeDevice);
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream) {
  Legacy(stream)->Push([ptr] { Release(ptr); });
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                            cudaStream_t stream) {
  Legacy(stream)->Push([dst, src, bytes] {
    while (g_copies_held.load()) std::this_thread::sleep_for(std::chrono::microseconds(100));
    const int copy_us = g_copy_us.load(std::memory_order_relaxed);
    if (copy_us == 0 || bytes < 2) {
      std::memcpy(dst, src, bytes);
      return;
    }
    // A copy that takes a while: its second half is read and written later.
    thread_local std::minstd_rand rng(std::random_device{}());
    const size_t half = bytes / 2;
    std::memcpy(dst, src, half);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % (copy_us + 1)));
    std::memcpy(static_cast<char*>(dst) + half, static_cast<const char*>(src) + half, bytes - half);
  });
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  std::memset(attr, 0, sizeof(*attr));
  std::lock_guard<std::mutex> lock(g_mem_mu);
  const char* p = static_cast<const char*>(ptr);
  auto it = g_allocations.upper_bound(p);
  if (it != g_allocations.begin()) {
    --it;
    if (p < it->first + std::max<size_t>(it->second.bytes, 1)) {
      attr->type = it->second.type;
      attr->device = it->second.device;
    }
  }
  return cudaSuccess;
}

// ---- NCCL ----------------------------------------------------------------------

namespace {

struct Message {
  const void* data;
  size_t bytes;
  bool consumed = false;
};

struct Clique;

struct P2p {
  bool send;
  void* buf;
  size_t bytes;
  int peer;
};

}  // namespace

struct ModelComm {
  Clique* clique = nullptr;
  int rank = 0;
  bool blocking = true;
  bool aborted = false;
  bool finalizing = false;
  bool revoked = false;
  int running = 0;  // its operations now executing on a stream
  int queued = 0;   // enqueued, not yet finished
  ncclResult_t async_error = ncclSuccess;
  std::function<void()> deferred;  // work waiting for ncclCommGetAsyncError
  unsigned long allreduce_seq = 0;
};

namespace {

struct Reduction {
  int arrived = 0;
  int left = 0;
  int sum = 0;
};

struct Clique {
  int size = 0;
  std::vector<ModelComm*> ranks;
  int joined = 0;
  std::map<std::pair<int, int>, std::deque<Message*>> channels;  // (from, to)
  std::map<unsigned long, Reduction> reductions;
};

std::mutex g_mu;
std::condition_variable g_cv;
std::map<std::string, Clique*> g_cliques;
unsigned long g_next_id = 1;
unsigned long g_calls = 0;  // every other call answers ncclInProgress
thread_local int t_group_depth = 0;
thread_local std::vector<std::pair<ModelComm*, cudaStream_t>> t_group_targets;
thread_local std::vector<P2p> t_group_ops;

// Runs on the stream's thread: the group's point-to-point operations.
void RunGroup(ModelComm* comm, const std::vector<P2p>& ops) {
  std::unique_lock<std::mutex> lock(g_mu);
  --comm->queued;
  if (comm->aborted) return;
  ++comm->running;
  Clique* c = comm->clique;
  std::vector<Message*> sent;
  for (const P2p& op : ops) {
    if (!op.send) continue;
    auto* m = new Message{op.buf, op.bytes};
    c->channels[{comm->rank, op.peer}].push_back(m);
    sent.push_back(m);
  }
  g_cv.notify_all();
  for (const P2p& op : ops) {
    if (op.send) continue;
    std::deque<Message*>& channel = c->channels[{op.peer, comm->rank}];
    g_cv.wait(lock, [&] { return comm->aborted || !channel.empty(); });
    if (comm->aborted) break;
    Message* m = channel.front();
    channel.pop_front();
    if (m->bytes != op.bytes) comm->async_error = ncclInvalidUsage;  // NCCL: undefined
    std::memcpy(op.buf, m->data, std::min(m->bytes, op.bytes));
    m->consumed = true;
    g_cv.notify_all();
  }
  g_cv.wait(lock, [&] {
    if (comm->aborted) return true;
    for (Message* m : sent) {
      if (!m->consumed) return false;
    }
    return true;
  });
  for (Message* m : sent) {
    if (m->consumed) {
      delete m;
    } else {  // withdrawn by the abort: peers wait on, as for a dead rank
      for (auto& [key, channel] : c->channels) {
        for (auto it = channel.begin(); it != channel.end(); ++it) {
          if (*it == m) {
            channel.erase(it);
            break;
          }
        }
      }
      delete m;
    }
  }
  --comm->running;
  g_cv.notify_all();
}

void RunAllReduce(ModelComm* comm, int* value, unsigned long seq) {
  std::unique_lock<std::mutex> lock(g_mu);
  --comm->queued;
  if (comm->aborted) return;
  ++comm->running;
  Clique* c = comm->clique;
  Reduction& r = c->reductions[seq];
  r.sum += *value;
  ++r.arrived;
  g_cv.notify_all();
  g_cv.wait(lock, [&] { return comm->aborted || r.arrived == c->size; });
  if (!comm->aborted) {
    *value = r.sum;
    if (++r.left == c->size) c->reductions.erase(seq);
  }
  --comm->running;
  g_cv.notify_all();
}

// Enqueues now, or (every other call, non-blocking communicators) at the
// next ncclCommGetAsyncError.
ncclResult_t Enqueue(ModelComm* comm, cudaStream_t stream, std::function<void()> work) {
  std::lock_guard<std::mutex> lock(g_mu);
  ++comm->queued;
  auto push = [stream, work = std::move(work)] { stream->Push(work); };
  if (!comm->blocking && (g_calls++ % 2 == 0)) {
    comm->deferred = push;
    return ncclInProgress;
  }
  push();
  return ncclSuccess;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  *version = NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::memset(id, 0, sizeof(*id));
  std::snprintf(id->internal, sizeof(id->internal), "model-%lu", g_next_id++);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* out, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t* config) {
  std::unique_lock<std::mutex> lock(g_mu);
  Clique*& c = g_cliques[std::string(id.internal, strnlen(id.internal, sizeof(id.internal)))];
  if (c == nullptr) {
    c = new Clique;
    c->size = nranks;
    c->ranks.assign(nranks, nullptr);
  }
  if (c->size != nranks || rank < 0 || rank >= nranks || c->ranks[rank] != nullptr) {
    return ncclInvalidArgument;
  }
  auto* comm = new ModelComm;
  comm->clique = c;
  comm->rank = rank;
  comm->blocking = config == nullptr || config->blocking != 0;
  c->ranks[rank] = comm;
  ++c->joined;
  g_cv.notify_all();
  *out = comm;
  if (!comm->blocking) return c->joined == c->size ? ncclSuccess : ncclInProgress;
  g_cv.wait(lock, [&] { return c->joined == c->size; });
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (comm->async_error != ncclSuccess) {
    *state = comm->async_error;
  } else if (comm->revoked) {
    *state = comm->running > 0 ? ncclInProgress : ncclSuccess;
  } else if (comm->clique->joined < comm->clique->size) {
    *state = ncclInProgress;
  } else if (comm->deferred) {
    comm->deferred();
    comm->deferred = nullptr;
    *state = ncclSuccess;
  } else if (comm->finalizing) {
    *state = comm->queued > 0 || comm->running > 0 ? ncclInProgress : ncclSuccess;
  } else {
    *state = ncclSuccess;
  }
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  std::lock_guard<std::mutex> lock(g_mu);
  comm->finalizing = true;
  return ncclInProgress;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  std::lock_guard<std::mutex> lock(g_mu);
  comm->aborted = true;  // nothing of it may run any more
  g_cv.notify_all();
  return ncclSuccess;
}

// Stops the communicator's operations; quiescent (ncclSuccess from
// ncclCommGetAsyncError) once none runs any more.
ncclResult_t ncclCommRevoke(ncclComm_t comm, int) {
  std::lock_guard<std::mutex> lock(g_mu);
  comm->aborted = true;
  comm->revoked = true;
  comm->deferred = nullptr;
  g_cv.notify_all();
  return ncclInProgress;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  std::unique_lock<std::mutex> lock(g_mu);
  comm->aborted = true;
  comm->deferred = nullptr;
  g_cv.notify_all();
  g_cv.wait(lock, [&] { return comm->running == 0; });
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclInvalidUsage: return "invalid usage (model: send and receive counts differ)";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "model error";
  }
}

const char* ncclGetLastError(ncclComm_t) { return ""; }

ncclResult_t ncclGroupStart() {
  ++t_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (--t_group_depth > 0) return ncclSuccess;
  std::vector<P2p> ops;
  ops.swap(t_group_ops);
  std::vector<std::pair<ModelComm*, cudaStream_t>> targets;
  targets.swap(t_group_targets);
  if (ops.empty()) return ncclSuccess;
  // nccl_comm.cc issues one communicator and stream per group.
  ModelComm* comm = targets.front().first;
  cudaStream_t stream = targets.front().second;
  for (const auto& t : targets) {
    if (t.first != comm || t.second != stream) return ncclInvalidUsage;
  }
  return Enqueue(comm, stream, [comm, ops] { RunGroup(comm, ops); });
}

ncclResult_t ncclSend(const void* buf, size_t count, ncclDataType_t, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  if (peer < 0 || peer >= comm->clique->size) return ncclInvalidArgument;
  ncclGroupStart();
  t_group_ops.push_back(P2p{true, const_cast<void*>(buf), count, peer});
  t_group_targets.emplace_back(comm, stream);
  return ncclGroupEnd();
}

ncclResult_t ncclRecv(void* buf, size_t count, ncclDataType_t, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  if (peer < 0 || peer >= comm->clique->size) return ncclInvalidArgument;
  ncclGroupStart();
  t_group_ops.push_back(P2p{false, buf, count, peer});
  t_group_targets.emplace_back(comm, stream);
  return ncclGroupEnd();
}

ncclResult_t ncclAllReduce(const void*, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t, ncclComm_t comm, cudaStream_t stream) {
  if (count != 1 || type != ncclInt32) return ncclInvalidArgument;  // the barrier's only use
  unsigned long seq;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    seq = comm->allreduce_seq++;
  }
  int* value = static_cast<int*>(recv);
  return Enqueue(comm, stream, [comm, value, seq] { RunAllReduce(comm, value, seq); });
}

}  // extern "C"
