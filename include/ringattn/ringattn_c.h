/* ringattn's C ABI: ring attention and single-device attention, forward and
 * backward, for callers that are not C++ (C, Rust, Julia, ctypes, ...).
 *
 * Nothing C++ crosses it: opaque handles, plain structs, DLPack's DLTensor
 * for every tensor (the ecosystem's struct: <dlpack/dlpack.h>), and integer
 * status codes (the absl::StatusCode values, below) with the message of the
 * last failure on the calling thread. Each call validates everything before
 * it touches memory or a peer, as the C++ API does (runtime/ringattn.h):
 *
 *   q, out, dout, dq   [B, S_r, H,   D]   float32 / bfloat16 on the CPU,
 *   k, v, dk, dv       [B, S_r, Hkv, D]   bfloat16 / float16 on a GPU;
 *   lse                [B, H, S_r]        float32, natural log.
 *
 * strides NULL means compact row-major (DLPack's rule); strides are in
 * elements; byte_offset is honoured. S_r is this rank's shard length
 * (ringattn_ring_shard_length) and its rows are the global positions
 * ringattn_ring_positions lists, in that order.
 *
 *   ringattn_options o;  ringattn_options_init(&o);
 *   o.seqlen = 65536;  o.sharding = RINGATTN_SHARDING_ZIGZAG;  o.causal = 1;
 *   ringattn_world* w;  ringattn_world_create("local", 2, &w);     // 2 ranks, threads
 *   ringattn_ring* r;   ringattn_ring_create(w, 0, &o, &r);        // rank 0's ring
 *   if (ringattn_ring_forward(r, &q, &k, &v, &out, &lse) != RINGATTN_OK)
 *     fprintf(stderr, "%s\n", ringattn_last_error());
 *
 * Thread safety: one ring per rank, each called from one thread at a time;
 * the ranks of a local world run on threads of their own (every rank must
 * call, as in the C++ API). */
#ifndef RINGATTN_RINGATTN_C_H_
#define RINGATTN_RINGATTN_C_H_

#include <stdint.h>

#include <dlpack/dlpack.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: absl::StatusCode's values. */
typedef int ringattn_status;
enum {
  RINGATTN_OK = 0,
  RINGATTN_CANCELLED = 1,
  RINGATTN_UNKNOWN = 2,
  RINGATTN_INVALID_ARGUMENT = 3,
  RINGATTN_DEADLINE_EXCEEDED = 4,
  RINGATTN_NOT_FOUND = 5,
  RINGATTN_ALREADY_EXISTS = 6,
  RINGATTN_PERMISSION_DENIED = 7,
  RINGATTN_RESOURCE_EXHAUSTED = 8,
  RINGATTN_FAILED_PRECONDITION = 9,
  RINGATTN_ABORTED = 10,
  RINGATTN_OUT_OF_RANGE = 11,
  RINGATTN_UNIMPLEMENTED = 12,
  RINGATTN_INTERNAL = 13,
  RINGATTN_UNAVAILABLE = 14,
  RINGATTN_DATA_LOSS = 15,
  RINGATTN_UNAUTHENTICATED = 16
};

/* The message of the last call on this thread that did not return
 * RINGATTN_OK ("" if none): it names the argument, the expected and the
 * actual value. Valid until the thread's next failing call. */
const char* ringattn_last_error(void);

/* "0.1.0": the library's version (RINGATTN_VERSION_STRING of version.h). */
const char* ringattn_version(void);

enum {
  RINGATTN_SHARDING_CONTIGUOUS = 0,
  RINGATTN_SHARDING_ZIGZAG = 1,
  RINGATTN_SHARDING_STRIPED = 2,
  RINGATTN_SHARDING_BALANCED = 3
};
enum { RINGATTN_BACKEND_CPU = 0, RINGATTN_BACKEND_CUDA = 1 };

/* The options of a ring or of single-device attention. Always start from
 * ringattn_options_init: it sets struct_size, which lets later versions add
 * fields at the end without breaking callers built against this one. The
 * arrays (cu_seqlens, block_mask) are copied by the create calls. */
typedef struct ringattn_options {
  uint32_t struct_size;   /* sizeof(ringattn_options) of the caller */
  int64_t seqlen;         /* GLOBAL sequence length (single device: S) */
  int32_t sharding;       /* RINGATTN_SHARDING_*; default zigzag */
  int64_t stripe;         /* striped sharding: tokens per stripe (1) */
  int32_t causal;         /* 0 or 1 */
  int64_t window_left;    /* -1: unbounded */
  int64_t window_right;   /* -1: unbounded */
  int64_t prefix_lm;      /* prefix-LM: the first P tokens see each other; 0 off */
  int64_t sink;           /* attention sinks (needs a left window); 0 off */
  const int64_t* cu_seqlens; /* packed documents [0, e1, ..., S]; NULL: none */
  int64_t num_cu_seqlens;    /* entries of cu_seqlens (documents + 1) */
  const uint8_t* block_mask; /* [block_heads, nQ, nK] bytes, nonzero = on; NULL: none */
  int64_t block_heads, block_rows, block_cols, block_size;
  float softcap;          /* 0: off */
  float scale;            /* 0: 1/sqrt(D) */
  DLDataType dtype;       /* of q, k, v, out, dout, dq, dk, dv; default float32 */
  int32_t backend;        /* RINGATTN_BACKEND_*; default CPU */
  int32_t device_index;   /* CUDA: the GPU */
  int32_t num_threads;    /* CPU threads of this rank; 0: cores / ranks */
  int32_t deterministic;  /* CUDA: bitwise reproducible backward */
  int64_t timeout_ms;     /* waits on peers; 0: RINGATTN_TIMEOUT_MS, else 60 s */
  /* How the ranks share a call: NULL or "ring", "allgather", "ulysses",
   * "hybrid:UxR", "auto" (docs/PLANNER.md); single-device attention
   * ignores it. */
  const char* strategy;
} ringattn_options;

void ringattn_options_init(ringattn_options* options);

/* The communicators of a world. backend "local" (size ranks as threads of
 * this process, host memory) or "cuda-local" (the same, device memory), or
 * "ucx" / "nccl" (one rank per process, launched by mpirun or with the
 * environment of comm/launch.h; size 0 or the launched size; collective). */
typedef struct ringattn_world ringattn_world;
ringattn_status ringattn_world_create(const char* backend, int size, ringattn_world** world);
int ringattn_world_size(const ringattn_world* world);
/* The ranks this process drives: all of them for local backends, one for
 * ucx and nccl; ringattn_world_rank(world, i) is the rank of the i-th. */
int ringattn_world_local_ranks(const ringattn_world* world);
int ringattn_world_rank(const ringattn_world* world, int i);
/* Destroy after every ring made from it. */
void ringattn_world_destroy(ringattn_world* world);

/* One rank's ring (rank: a rank this process drives). */
typedef struct ringattn_ring ringattn_ring;
ringattn_status ringattn_ring_create(ringattn_world* world, int rank,
                                     const ringattn_options* options, ringattn_ring** ring);
/* Single-device attention (no communication; a world of one rank inside):
 * options.seqlen is S, options.sharding is ignored. The same forward and
 * backward calls as a ring's. */
ringattn_status ringattn_attention_create(const ringattn_options* options, ringattn_ring** ring);
int64_t ringattn_ring_shard_length(const ringattn_ring* ring);
/* positions[0 .. shard_length): the global position of each local row. */
void ringattn_ring_positions(const ringattn_ring* ring, int64_t* positions);
ringattn_status ringattn_ring_forward(ringattn_ring* ring, const DLTensor* q, const DLTensor* k,
                                      const DLTensor* v, const DLTensor* out, const DLTensor* lse);
/* out and lse are the forward's; dq, dk, dv are overwritten. */
ringattn_status ringattn_ring_backward(ringattn_ring* ring, const DLTensor* q, const DLTensor* k,
                                       const DLTensor* v, const DLTensor* out,
                                       const DLTensor* lse, const DLTensor* dout,
                                       const DLTensor* dq, const DLTensor* dk, const DLTensor* dv);
void ringattn_ring_destroy(ringattn_ring* ring);

#ifdef __cplusplus
}
#endif

#endif /* RINGATTN_RINGATTN_C_H_ */
