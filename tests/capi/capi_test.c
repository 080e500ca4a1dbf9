/* The C ABI from C (C11, no C++): a 2-rank ring on the local world (one
 * pthread per rank) and single-device attention, forward and backward in
 * float32, against a naive float64 attention written here; then the
 * refusals (status code and message). Exit status 0 when all pass. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ringattn/ringattn_c.h>

enum { S = 97, H = 4, HKV = 2, D = 16, W = 2 };

static float q[S * H * D], k[S * HKV * D], v[S * HKV * D], dout[S * H * D];
static double out_ref[S * H * D], lse_ref[H * S], dq_ref[S * H * D], dk_ref[S * HKV * D],
    dv_ref[S * HKV * D];
static int failures = 0;

static void check(int ok, const char* what) {
  if (!ok) {
    printf("FAIL %s\n", what);
    ++failures;
  }
}

/* Causal attention with GQA in float64: out, lse, and the gradients of
 * sum(dout * out). */
static void reference(void) {
  const double scale = 1.0 / sqrt((double)D);
  double p[S];
  memset(dq_ref, 0, sizeof dq_ref);
  memset(dk_ref, 0, sizeof dk_ref);
  memset(dv_ref, 0, sizeof dv_ref);
  for (int h = 0; h < H; ++h) {
    const int g = h / (H / HKV);
    for (int i = 0; i < S; ++i) {
      const float* qi = q + (i * H + h) * D;
      double m = -INFINITY, sum = 0;
      for (int j = 0; j <= i; ++j) {
        double s = 0;
        for (int d = 0; d < D; ++d) s += (double)qi[d] * k[(j * HKV + g) * D + d];
        p[j] = s * scale;
        if (p[j] > m) m = p[j];
      }
      for (int j = 0; j <= i; ++j) sum += p[j] = exp(p[j] - m);
      lse_ref[h * S + i] = m + log(sum);
      double* o = out_ref + (i * H + h) * D;
      for (int d = 0; d < D; ++d) o[d] = 0;
      for (int j = 0; j <= i; ++j) {
        p[j] /= sum;
        for (int d = 0; d < D; ++d) o[d] += p[j] * v[(j * HKV + g) * D + d];
      }
      const float* di = dout + (i * H + h) * D;
      double delta = 0;
      for (int d = 0; d < D; ++d) delta += (double)di[d] * o[d];
      for (int j = 0; j <= i; ++j) {
        double dp = 0;
        for (int d = 0; d < D; ++d) dp += (double)di[d] * v[(j * HKV + g) * D + d];
        const double ds = p[j] * (dp - delta) * scale;
        for (int d = 0; d < D; ++d) {
          dq_ref[(i * H + h) * D + d] += ds * k[(j * HKV + g) * D + d];
          dk_ref[(j * HKV + g) * D + d] += ds * qi[d];
          dv_ref[(j * HKV + g) * D + d] += p[j] * di[d];
        }
      }
    }
  }
}

static DLTensor tensor(float* data, int ndim, int64_t* shape) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.ndim = ndim;
  t.dtype.code = kDLFloat;
  t.dtype.bits = 32;
  t.dtype.lanes = 1;
  t.shape = shape;
  t.strides = NULL; /* compact */
  return t;
}

/* The largest |got - want| over the rows of global positions pos[0..n). */
static double row_error(const float* got, const double* want, const int64_t* pos, int64_t n,
                        int width) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int e = 0; e < width; ++e) {
      const double err = fabs(got[i * width + e] - want[pos[i] * width + e]);
      worst = isnan(err) ? INFINITY : (err > worst ? err : worst);
    }
  return worst;
}

/* One rank's (or the single device's) forward and backward on its rows. */
static double run_and_compare(ringattn_ring* r) {
  const int64_t n = ringattn_ring_shard_length(r);
  int64_t* pos = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
  ringattn_ring_positions(r, pos);
  float* ql = malloc(sizeof(float) * (size_t)(n * H * D + 1));
  float* kl = malloc(sizeof(float) * (size_t)(n * HKV * D + 1));
  float* vl = malloc(sizeof(float) * (size_t)(n * HKV * D + 1));
  float* dol = malloc(sizeof(float) * (size_t)(n * H * D + 1));
  float* o = malloc(sizeof(float) * (size_t)(n * H * D + 1));
  float* lse = malloc(sizeof(float) * (size_t)(n * H + 1));
  float* dq = malloc(sizeof(float) * (size_t)(n * H * D + 1));
  float* dk = malloc(sizeof(float) * (size_t)(n * HKV * D + 1));
  float* dv = malloc(sizeof(float) * (size_t)(n * HKV * D + 1));
  for (int64_t i = 0; i < n; ++i) {
    memcpy(ql + i * H * D, q + pos[i] * H * D, sizeof(float) * H * D);
    memcpy(dol + i * H * D, dout + pos[i] * H * D, sizeof(float) * H * D);
    memcpy(kl + i * HKV * D, k + pos[i] * HKV * D, sizeof(float) * HKV * D);
    memcpy(vl + i * HKV * D, v + pos[i] * HKV * D, sizeof(float) * HKV * D);
  }
  for (int64_t i = 0; i < n * H * D; ++i) o[i] = dq[i] = NAN; /* poisoned */
  for (int64_t i = 0; i < n * HKV * D; ++i) dk[i] = dv[i] = NAN;
  for (int64_t i = 0; i < n * H; ++i) lse[i] = NAN;
  int64_t qs[4] = {1, n, H, D}, ks[4] = {1, n, HKV, D}, ls[3] = {1, H, n};
  DLTensor tq = tensor(ql, 4, qs), tk = tensor(kl, 4, ks), tv = tensor(vl, 4, ks),
           tout = tensor(o, 4, qs), tlse = tensor(lse, 3, ls), tdo = tensor(dol, 4, qs),
           tdq = tensor(dq, 4, qs), tdk = tensor(dk, 4, ks), tdv = tensor(dv, 4, ks);
  double worst = INFINITY;
  if (ringattn_ring_forward(r, &tq, &tk, &tv, &tout, &tlse) != RINGATTN_OK ||
      ringattn_ring_backward(r, &tq, &tk, &tv, &tout, &tlse, &tdo, &tdq, &tdk, &tdv) !=
          RINGATTN_OK) {
    printf("error: %s\n", ringattn_last_error());
  } else {
    worst = row_error(o, out_ref, pos, n, H * D);
    double e = row_error(dq, dq_ref, pos, n, H * D);
    worst = e > worst ? e : worst;
    e = row_error(dk, dk_ref, pos, n, HKV * D);
    worst = e > worst ? e : worst;
    e = row_error(dv, dv_ref, pos, n, HKV * D);
    worst = e > worst ? e : worst;
    for (int h = 0; h < H; ++h)
      for (int64_t i = 0; i < n; ++i) {
        e = fabs(lse[h * n + i] - lse_ref[h * S + pos[i]]);
        worst = isnan(e) ? INFINITY : (e > worst ? e : worst);
      }
  }
  free(pos), free(ql), free(kl), free(vl), free(dol), free(o), free(lse), free(dq), free(dk),
      free(dv);
  return worst;
}

struct rank_job {
  ringattn_world* world;
  int rank;
  const char* strategy;
  double error;
};

static void* rank_main(void* arg) {
  struct rank_job* job = arg;
  ringattn_options o;
  ringattn_options_init(&o);
  o.seqlen = S;
  o.causal = 1;
  o.num_threads = 1;
  o.strategy = job->strategy;
  ringattn_ring* r = NULL;
  job->error = INFINITY;
  if (ringattn_ring_create(job->world, job->rank, &o, &r) != RINGATTN_OK) {
    printf("rank %d: %s\n", job->rank, ringattn_last_error());
    return NULL;
  }
  job->error = run_and_compare(r);
  ringattn_ring_destroy(r);
  return NULL;
}

int main(void) {
  srand(3);
  for (int i = 0; i < S * H * D; ++i) q[i] = (float)rand() / RAND_MAX * 2 - 1;
  for (int i = 0; i < S * H * D; ++i) dout[i] = (float)rand() / RAND_MAX * 2 - 1;
  for (int i = 0; i < S * HKV * D; ++i) k[i] = (float)rand() / RAND_MAX * 2 - 1;
  for (int i = 0; i < S * HKV * D; ++i) v[i] = (float)rand() / RAND_MAX * 2 - 1;
  reference();
  printf("ringattn %s\n", ringattn_version());
  check(strlen(ringattn_version()) > 0, "version");

  /* The ring: 2 ranks, zigzag, causal, GQA. */
  ringattn_world* world = NULL;
  if (ringattn_world_create("local", W, &world) != RINGATTN_OK) {
    printf("FAIL world: %s\n", ringattn_last_error());
    return 1;
  }
  check(ringattn_world_size(world) == W && ringattn_world_local_ranks(world) == W &&
            ringattn_world_rank(world, 1) == 1,
        "world size and ranks");
  pthread_t threads[W];
  struct rank_job jobs[W];
  /* The ring, then the same through the Ulysses strategy. */
  const char* strategies[2] = {NULL, "ulysses"};
  for (int st = 0; st < 2; ++st) {
  for (int r = 0; r < W; ++r) {
    jobs[r].world = world;
    jobs[r].rank = r;
    jobs[r].strategy = strategies[st];
    pthread_create(&threads[r], NULL, rank_main, &jobs[r]);
  }
  for (int r = 0; r < W; ++r) pthread_join(threads[r], NULL);
  for (int r = 0; r < W; ++r) {
    printf("%s rank %d: max abs error %.3g (out, lse, dq, dk, dv)\n",
           strategies[st] ? strategies[st] : "ring", r, jobs[r].error);
    check(jobs[r].error <= 1e-4, "ring against float64");
  }
  }

  /* Single-device attention. */
  ringattn_options o;
  ringattn_options_init(&o);
  o.seqlen = S;
  o.causal = 1;
  ringattn_ring* one = NULL;
  if (ringattn_attention_create(&o, &one) != RINGATTN_OK) {
    printf("FAIL attention: %s\n", ringattn_last_error());
    ++failures;
  } else {
    const double e = run_and_compare(one);
    printf("single device: max abs error %.3g\n", e);
    check(e <= 1e-4, "single device against float64");

    /* Refusals: the code, and a message naming the argument. */
    int64_t bad_shape[4] = {1, S - 1, H, D}, kshape[4] = {1, S, HKV, D}, lshape[3] = {1, H, S};
    static float buf[S * H * D], lbuf[H * S];
    DLTensor tq = tensor(buf, 4, bad_shape), tk = tensor(buf, 4, kshape),
             tl = tensor(lbuf, 3, lshape);
    check(ringattn_ring_forward(one, &tq, &tk, &tk, &tq, &tl) == RINGATTN_INVALID_ARGUMENT &&
              strstr(ringattn_last_error(), "q shape") != NULL,
          "wrong q shape");
    int64_t qshape[4] = {1, S, H, D};
    tq = tensor(buf, 4, qshape);
    tq.dtype.code = kDLInt;
    check(ringattn_ring_forward(one, &tq, &tk, &tk, &tq, &tl) == RINGATTN_INVALID_ARGUMENT &&
              strstr(ringattn_last_error(), "q dtype") != NULL,
          "integer q");
    check(ringattn_ring_forward(one, NULL, &tk, &tk, &tq, &tl) == RINGATTN_INVALID_ARGUMENT &&
              strstr(ringattn_last_error(), "q: null") != NULL,
          "null q");
    ringattn_ring_destroy(one);
  }
  ringattn_options raw;
  memset(&raw, 0, sizeof raw);
  ringattn_ring* r = NULL;
  check(ringattn_attention_create(&raw, &r) == RINGATTN_INVALID_ARGUMENT && r == NULL &&
            strstr(ringattn_last_error(), "options.struct_size") != NULL,
        "options without ringattn_options_init");
  o.window_left = -5;
  check(ringattn_attention_create(&o, &r) == RINGATTN_INVALID_ARGUMENT &&
            strstr(ringattn_last_error(), "window_left") != NULL,
        "bad window");
  o.window_left = -1;
  o.strategy = "hybrid:3";
  check(ringattn_ring_create(world, 0, &o, &r) == RINGATTN_INVALID_ARGUMENT &&
            strstr(ringattn_last_error(), "options.strategy") != NULL,
        "a bad strategy");
  o.strategy = NULL;
  check(ringattn_ring_create(world, 7, &o, &r) == RINGATTN_INVALID_ARGUMENT &&
            strstr(ringattn_last_error(), "rank") != NULL,
        "a rank this process does not drive");
  ringattn_world* none = NULL;
  check(ringattn_world_create("carrier-pigeon", 2, &none) != RINGATTN_OK && none == NULL &&
            strlen(ringattn_last_error()) > 0,
        "unknown backend");
  ringattn_world_destroy(world);
  printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
