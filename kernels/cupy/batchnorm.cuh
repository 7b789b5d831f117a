// Fused batch normalization (Ioffe & Szegedy 2015) with an optional activation after it.
// Needs generated.cuh, vector.cuh, activations.cuh and fused_switch.cuh first (the activation device functions and
// the vector pass are reused, not rewritten).
//
// Layout: x contiguous, viewed as (N, C, S): channel axis 1, S = product of the spatial sizes
// (S = 1 for (N, C)). Statistics per channel over M = N * S values.
//
// Forward, training (2 launches, 3 passes over memory):
//   bn_stats_{rows,spatial}: one read of x. Each thread keeps shifted sums in double registers
//     (no stack frame, no division per element), turned into a Welford state and merged across
//     threads with Chan's formula, one partial (count, mean, M2) per block. The last block of each
//     channel (atomic counter) merges the partials in a fixed order -> mean, invstd =
//     1 / sqrt(M2 / M + eps), the running statistics updated in place with the unbiased variance
//     M2 / (M - 1), and the normalize pass's per-channel constants (coef). No E[x^2] - E[x]^2.
//   bn_apply: one read of x, one write of y = act((x - coef0) * coef1 + coef2).
// Inference: bn_fold_running (C values) folds the running statistics into coef, then bn_apply.
// Backward (2 launches, 5 passes):
//   bn_bwd_reduce_{rows,spatial}: reads x, dy; dz = dy * act'(z) with z recomputed from x;
//     per channel sum(dz) = dbeta and sum(dz * xhat) = dgamma (double accumulation, last-block
//     merge, which also folds the dx pass's constants dcoef).
//   bn_bwd_dx: reads x, dy, writes dx = gamma * invstd * (dz - dbeta / M - xhat * dgamma / M)
//     (training), or gamma * invstd * dz (statistics were constants: running statistics).
//
// Speed by construction (checked without a GPU in tests/test_gpu_static.py): the per-element
// loops take a channel's values by a cursor stepped without division, 16-byte loads where
// S % 4 == 0 and the data is aligned, 2 to 8 independent loads in flight per thread, the fused
// activation a compile-time constant (GPUNET_FUSED_DISPATCH); grids from the kernels' occupancy
// and the SM count, in whole waves (launch.py).
//
// Block shapes: "rows" kernels (S == 1) use 32 channels x 8 row groups so that a warp reads 32
// consecutive channels of one row (coalesced); "spatial" kernels give each block a chunk of one
// channel's N*S values.

#ifndef GPUNET_BATCHNORM_CUH
#define GPUNET_BATCHNORM_CUH

#define GPUNET_BN_THREADS 256
#define GPUNET_BN_ROWS_X 32
#define GPUNET_BN_ROWS_Y 8
#define GPUNET_BN_ROWS_LANES 4  // the most channels a rows thread takes (4 floats; 2 doubles)

// The fused activation, gpunet_act_fwd / gpunet_act_bwd(code, ...): fused_switch.cuh (generated).

// ------------------------------------------------------------------ Welford / Chan in double
struct GpunetWelford { double n, mean, m2; };

__device__ __forceinline__ void gpunet_chan_merge(GpunetWelford &a, const GpunetWelford &b) {
    if (b.n == 0.0) return;
    if (a.n == 0.0) { a = b; return; }
    double n = a.n + b.n;
    double delta = b.mean - a.mean;
    a.mean += delta * (b.n / n);
    a.m2 += b.m2 + delta * delta * (a.n * b.n / n);
    a.n = n;
}

// Per thread, in registers: shifted sums (Chan, Golub & LeVeque 1983) of d = x - K and d^2 in
// double, K = the thread's first value. No division per element; exact enough because K is one
// of the values, so |mean - K| is of the order of the spread. Turned into a Welford state once.
struct GpunetShifted {
    double k, s, q, n;
    __device__ __forceinline__ void add(double v) { double d = v - k; s += d; q = fma(d, d, q); n += 1.0; }
    __device__ __forceinline__ GpunetWelford welford() const {
        GpunetWelford w = {n, 0.0, 0.0};
        if (n > 0.0) { double m = s / n; w.mean = k + m; w.m2 = fmax(q - s * m, 0.0); }
        return w;
    }
};

// Loads of L consecutive values (L = 1: a scalar; 4 floats or 2 doubles: one 16-byte load).
template <typename T, int L> struct GpunetLoad { T v[L]; };
template <typename T, int L>
__device__ __forceinline__ GpunetLoad<T, L> gpunet_load(const T *p) {
    GpunetLoad<T, L> r;
    if (L == GpunetVec<T>::lanes) {
        GpunetLanes<T> u;
        u.vec = *reinterpret_cast<const typename GpunetVec<T>::type *>(p);
#pragma unroll
        for (int i = 0; i < L; ++i) r.v[i] = u.s[i];
    } else {
#pragma unroll
        for (int i = 0; i < L; ++i) r.v[i] = p[i];
    }
    return r;
}

// Position (n, s) of a channel's element k = n * S + s, stepped by a fixed stride without a
// division: the stride's (dn, ds) are divided out once per thread, outside the loop.
struct GpunetRunCursor {
    long long n, s;
    __device__ __forceinline__ void step(long long dn, long long ds, long long S) {
        n += dn; s += ds;
        if (s >= S) { s -= S; ++n; }
    }
};

// Merge partials [0, nparts) of one channel in order and finish its statistics (one thread).
// coef (3 x C): the normalize pass's per-channel constants, y = act((x - coef0) * coef1 + coef2)
// with coef1 = gamma * invstd (invstd without affine), coef2 = beta (0): computed once per channel.
template <typename T>
__device__ __forceinline__ void gpunet_bn_fold(long long c, long long C, T mean, T invstd, const T *gamma,
                                               const T *beta, int affine, T *coef) {
    coef[c] = mean;
    coef[C + c] = affine ? gamma[c] * invstd : invstd;
    coef[2 * C + c] = affine ? beta[c] : T(0);
}

template <typename T>
__device__ void gpunet_bn_finalize(long long c, int nparts, const double *part, T *mean_out,
                                   T *invstd_out, T *running_mean, T *running_var, double factor,
                                   double eps, int update_running, long long C, const T *gamma,
                                   const T *beta, int affine, T *coef) {
    GpunetWelford w = {0.0, 0.0, 0.0};
    for (int p = 0; p < nparts; ++p) {
        const double *q = part + 3 * (c * nparts + p);
        GpunetWelford b = {__ldcg(q), __ldcg(q + 1), __ldcg(q + 2)};
        gpunet_chan_merge(w, b);
    }
    double var = w.m2 / w.n;                      // biased: used to normalize
    mean_out[c] = T(w.mean);
    invstd_out[c] = T(1.0 / sqrt(var + eps));
    gpunet_bn_fold(c, C, T(w.mean), T(1.0 / sqrt(var + eps)), gamma, beta, affine, coef);
    if (update_running) {                         // unbiased: tracked for inference
        double unbiased = w.n > 1.0 ? w.m2 / (w.n - 1.0) : var;
        running_mean[c] = T((1.0 - factor) * double(running_mean[c]) + factor * w.mean);
        running_var[c] = T((1.0 - factor) * double(running_var[c]) + factor * unbiased);
    }
}

// True in exactly one block of a group: the last to finish. `wrote`: this thread stored a
// partial; only those threads fence (the fence orders their stores before the block's arrival).
__device__ __forceinline__ bool gpunet_last_block(unsigned int *counter, unsigned int group_size,
                                                  bool wrote) {
    __shared__ bool last;
    if (wrote) __threadfence();
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) {
        unsigned int done = atomicAdd(counter, 1u);
        last = (done == group_size - 1);
        if (last) *counter = 0u;                  // ready for the next launch
    }
    __syncthreads();
    return last;
}

// The Welford states of a block's threads (one channel) merged in shared memory; thread 0 gets it.
__device__ __forceinline__ GpunetWelford gpunet_block_welford(GpunetWelford w) {
    __shared__ double sh[3][GPUNET_BN_THREADS];
    sh[0][threadIdx.x] = w.n; sh[1][threadIdx.x] = w.mean; sh[2][threadIdx.x] = w.m2;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            GpunetWelford a = {sh[0][threadIdx.x], sh[1][threadIdx.x], sh[2][threadIdx.x]};
            GpunetWelford o = {sh[0][threadIdx.x + stride], sh[1][threadIdx.x + stride], sh[2][threadIdx.x + stride]};
            gpunet_chan_merge(a, o);
            sh[0][threadIdx.x] = a.n; sh[1][threadIdx.x] = a.mean; sh[2][threadIdx.x] = a.m2;
        }
        __syncthreads();
    }
    GpunetWelford r = {sh[0][0], sh[1][0], sh[2][0]};
    return r;
}

__device__ __forceinline__ void gpunet_block_sum2(double &s0, double &s1) {
    __shared__ double sh[2][GPUNET_BN_THREADS];
    sh[0][threadIdx.x] = s0; sh[1][threadIdx.x] = s1;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            sh[0][threadIdx.x] += sh[0][threadIdx.x + stride];
            sh[1][threadIdx.x] += sh[1][threadIdx.x + stride];
        }
        __syncthreads();
    }
    s0 = sh[0][0]; s1 = sh[1][0];
}

// ------------------------------------------------------------------ the per-channel loops
// A block's share of channel c: elements [begin, end) of its N*S values, element k at
// ((k / S) * C + c) * S + k % S. Thread t takes the L-value groups at begin + L*(t + i*blockDim),
// U of them per iteration (U independent loads in flight), each position stepped by a
// GpunetRunCursor. L > 1 needs S, begin and end multiples of L and 16-byte aligned data.
// f.load(index) loads a group (W values: L of x, or L of x and L of dy), f.use(group) folds it
// in; the U loads of an iteration are issued before any is used.
template <typename T, int L, int W, int U, typename F>
__device__ __forceinline__ void gpunet_channel_loop(long long C, long long S, long long c,
                                                    long long begin, long long end, F &f) {
    const long long stride = (long long)L * blockDim.x;
    long long k = begin + (long long)L * threadIdx.x;
    if (k >= end) return;
    GpunetRunCursor cur[U];
    cur[0].n = k / S; cur[0].s = k - cur[0].n * S;      // once per thread, not per element
    const long long dn = stride / S, ds = stride - dn * S;
#pragma unroll
    for (int u = 1; u < U; ++u) { cur[u] = cur[u - 1]; cur[u].step(dn, ds, S); }
    const long long dnU = (stride * U) / S, dsU = stride * U - dnU * S;
    for (; k + (U - 1) * stride < end; k += U * stride) {
        GpunetLoad<T, W> a[U];
#pragma unroll
        for (int u = 0; u < U; ++u) a[u] = f.load((cur[u].n * C + c) * S + cur[u].s);
#pragma unroll
        for (int u = 0; u < U; ++u) { f.use(a[u]); cur[u].step(dnU, dsU, S); }
    }
#pragma unroll
    for (int u = 0; u < U - 1; ++u)                     // the tail: fewer than U groups left
        if (k + u * stride < end) f.use(f.load((cur[u].n * C + c) * S + cur[u].s));
}

template <typename T, int L> struct GpunetStatsF {
    const T *x;
    GpunetShifted acc;
    __device__ __forceinline__ GpunetLoad<T, L> load(long long i) const { return gpunet_load<T, L>(x + i); }
    __device__ __forceinline__ void use(const GpunetLoad<T, L> &a) {
#pragma unroll
        for (int i = 0; i < L; ++i) acc.add(double(a.v[i]));
    }
};

// Backward: per element dz = dy * act'(z), z = xhat * g + beta, xhat = (x - mean) * invstd;
// sums of dz and dz * xhat in double. ACT is a compile-time constant (GPUNET_FUSED_DISPATCH).
template <typename T, int L, int ACT> struct GpunetBwdF {
    const T *x, *dy;
    T m, is, g, bt, act_a;
    double s0, s1;
    __device__ __forceinline__ GpunetLoad<T, 2 * L> load(long long i) const {
        GpunetLoad<T, L> a = gpunet_load<T, L>(x + i), b = gpunet_load<T, L>(dy + i);
        GpunetLoad<T, 2 * L> r;
#pragma unroll
        for (int j = 0; j < L; ++j) { r.v[j] = a.v[j]; r.v[L + j] = b.v[j]; }
        return r;
    }
    __device__ __forceinline__ void use(const GpunetLoad<T, 2 * L> &a) {
#pragma unroll
        for (int j = 0; j < L; ++j) {
            T xhat = (a.v[j] - m) * is;
            T dz = ACT == GPUNET_ACT_NONE ? a.v[L + j] : gpunet_act_bwd(ACT, a.v[L + j], xhat * g + bt, act_a);
            s0 += double(dz);
            s1 = fma(double(dz), double(xhat), s1);
        }
    }
};

// ------------------------------------------------------------------ forward statistics
// Spatial: grid (C, nparts) -- channels on x, which takes up to 2^31 - 1 blocks.
template <typename T, int L, int U>
__device__ void gpunet_bn_stats_spatial_impl(const T *x, long long C, long long S, long long begin,
                                             long long end, GpunetShifted &acc) {
    GpunetStatsF<T, L> f;
    f.x = x; f.acc = acc;
    gpunet_channel_loop<T, L, L, U>(C, S, (long long)blockIdx.x, begin, end, f);
    acc = f.acc;
}

template <typename T>
__device__ void gpunet_bn_stats_spatial(const T *x, long long N, long long C, long long S, long long chunk,
                                        double *part, unsigned int *counters, T *mean_out, T *invstd_out,
                                        T *running_mean, T *running_var, double factor, double eps,
                                        int update_running, const T *gamma, const T *beta, int affine,
                                        T *coef) {
    const int L = GpunetVec<T>::lanes;
    long long c = blockIdx.x;
    int nparts = gridDim.y;
    long long total = N * S;
    long long begin = (long long)blockIdx.y * chunk;
    long long end = begin + chunk < total ? begin + chunk : total;
    long long first = begin + threadIdx.x;                // the shift K: one of this thread's values
    long long fn = first / S;
    GpunetShifted acc = {first < end ? double(x[(fn * C + c) * S + first - fn * S]) : 0.0, 0.0, 0.0, 0.0};
    if (S % L == 0 && chunk % L == 0 && reinterpret_cast<unsigned long long>(x) % 16 == 0)
        gpunet_bn_stats_spatial_impl<T, L, 2>(x, C, S, begin, end, acc);
    else
        gpunet_bn_stats_spatial_impl<T, 1, 4>(x, C, S, begin, end, acc);
    GpunetWelford w = gpunet_block_welford(acc.welford());
    if (threadIdx.x == 0) {
        double *q = part + 3 * (c * nparts + blockIdx.y);
        q[0] = w.n; q[1] = w.mean; q[2] = w.m2;
    }
    if (gpunet_last_block(counters + c, nparts, threadIdx.x == 0) && threadIdx.x == 0)
        gpunet_bn_finalize(c, nparts, part, mean_out, invstd_out, running_mean, running_var, factor, eps,
                           update_running, C, gamma, beta, affine, coef);
}

// Rows (S == 1): grid (ceil(C / (32 L)), nparts), block (32, 8). Block p reads rows
// [p*chunk, (p+1)*chunk) of 32 L consecutive channels, L per thread: L = 4 floats / 2 doubles
// (one 16-byte load per row) where C % L == 0 and x is 16-byte aligned, else L = 1 (a warp still
// reads 128 coalesced bytes of one row). U rows per thread per iteration: U loads in flight.
template <typename T, int L>
__device__ __forceinline__ void gpunet_bn_stats_rows_impl(const T *x, long long N, long long C,
                                                          long long chunk, double *part,
                                                          unsigned int *counters, T *mean_out,
                                                          T *invstd_out, T *running_mean, T *running_var,
                                                          double factor, double eps, int update_running,
                                                          const T *gamma, const T *beta, int affine,
                                                          T *coef, double *sh) {
    const int U = L == 1 ? 8 : 4, Y = GPUNET_BN_ROWS_Y, X = GPUNET_BN_ROWS_X * L;
    int tx = threadIdx.x, ty = threadIdx.y;
    int nparts = gridDim.y;
    long long c0 = ((long long)blockIdx.x * GPUNET_BN_ROWS_X + tx) * L;
    long long begin = (long long)blockIdx.y * chunk;
    long long end = begin + chunk < N ? begin + chunk : N;
    GpunetShifted acc[L];
#pragma unroll
    for (int j = 0; j < L; ++j) acc[j].k = acc[j].s = acc[j].q = acc[j].n = 0.0;
    if (c0 < C && begin + ty < end) {
        GpunetLoad<T, L> first = gpunet_load<T, L>(x + (begin + ty) * C + c0);
#pragma unroll
        for (int j = 0; j < L; ++j) acc[j].k = double(first.v[j]);
        long long r = begin + ty;
        for (; r + (U - 1) * Y < end; r += U * Y) {
            GpunetLoad<T, L> a[U];
#pragma unroll
            for (int u = 0; u < U; ++u) a[u] = gpunet_load<T, L>(x + (r + u * Y) * C + c0);
#pragma unroll
            for (int u = 0; u < U; ++u)
#pragma unroll
                for (int j = 0; j < L; ++j) acc[j].add(double(a[u].v[j]));
        }
        for (; r < end; r += Y) {
            GpunetLoad<T, L> a = gpunet_load<T, L>(x + r * C + c0);
#pragma unroll
            for (int j = 0; j < L; ++j) acc[j].add(double(a.v[j]));
        }
    }
#pragma unroll
    for (int j = 0; j < L; ++j) {                  // sh: [3][Y][X], this thread's L columns
        GpunetWelford w = acc[j].welford();
        int col = tx * L + j;
        sh[(0 * Y + ty) * X + col] = w.n; sh[(1 * Y + ty) * X + col] = w.mean; sh[(2 * Y + ty) * X + col] = w.m2;
    }
    __syncthreads();
    bool writer = ty == 0 && c0 < C;
    if (writer) {
#pragma unroll
        for (int j = 0; j < L; ++j) {
            int col = tx * L + j;
            GpunetWelford w = {sh[col], sh[Y * X + col], sh[2 * Y * X + col]};
            for (int i = 1; i < Y; ++i) {
                GpunetWelford o = {sh[i * X + col], sh[(Y + i) * X + col], sh[(2 * Y + i) * X + col]};
                gpunet_chan_merge(w, o);
            }
            double *q = part + 3 * ((c0 + j) * nparts + blockIdx.y);
            q[0] = w.n; q[1] = w.mean; q[2] = w.m2;
        }
    }
    if (gpunet_last_block(counters + blockIdx.x, nparts, writer) && writer)
#pragma unroll
        for (int j = 0; j < L; ++j)
            gpunet_bn_finalize(c0 + j, nparts, part, mean_out, invstd_out, running_mean, running_var, factor,
                               eps, update_running, C, gamma, beta, affine, coef);
}

template <typename T>
__device__ void gpunet_bn_stats_rows(const T *x, long long N, long long C, long long chunk, double *part,
                                     unsigned int *counters, T *mean_out, T *invstd_out, T *running_mean,
                                     T *running_var, double factor, double eps, int update_running,
                                     const T *gamma, const T *beta, int affine, T *coef) {
    const int L = GpunetVec<T>::lanes;
    __shared__ double sh[3 * GPUNET_BN_ROWS_Y * GPUNET_BN_ROWS_X * GPUNET_BN_ROWS_LANES];
    if (C % L == 0 && reinterpret_cast<unsigned long long>(x) % 16 == 0)
        gpunet_bn_stats_rows_impl<T, L>(x, N, C, chunk, part, counters, mean_out, invstd_out, running_mean,
                                        running_var, factor, eps, update_running, gamma, beta, affine, coef, sh);
    else
        gpunet_bn_stats_rows_impl<T, 1>(x, N, C, chunk, part, counters, mean_out, invstd_out, running_mean,
                                        running_var, factor, eps, update_running, gamma, beta, affine, coef, sh);
}

// ------------------------------------------------------------------ backward reductions
// Per channel: sum(dz) and sum(dz * xhat), xhat = (x - mean) * invstd, z = gamma * xhat + beta,
// dz = dy * act'(z). Partials (2 doubles per block); the last block writes dbeta, dgamma.
template <typename T>
__device__ __forceinline__ void gpunet_bn_dz(T xv, T dyv, T mean, T invstd, T g, T bta, int act,
                                             T act_a, T &xhat, T &dz) {
    xhat = (xv - mean) * invstd;
    dz = act == GPUNET_ACT_NONE ? dyv : gpunet_act_bwd(act, dyv, xhat * g + bta, act_a);
}

// dcoef (7 x C): the dx pass's per-channel constants, computed once per channel:
// mean, invstd, g, beta (z = xhat * g + beta), g * invstd, and dbeta / M, dgamma / M (0, 0 when
// the statistics were constants): dx = g * invstd * (dz - dbeta / M - xhat * dgamma / M).
template <typename T>
__device__ void gpunet_bn_bwd_finalize(long long c, int nparts, const double *part, T *dgamma, T *dbeta,
                                       long long C, T m, T is, T g, T bt, int batch_stats, double inv_m,
                                       T *dcoef) {
    double s0 = 0.0, s1 = 0.0;
    for (int p = 0; p < nparts; ++p) {
        const double *q = part + 2 * (c * nparts + p);
        s0 += __ldcg(q);
        s1 += __ldcg(q + 1);
    }
    dbeta[c] = T(s0);
    dgamma[c] = T(s1);
    T k[7] = {m, is, g, bt, g * is, batch_stats ? T(s0 * inv_m) : T(0), batch_stats ? T(s1 * inv_m) : T(0)};
#pragma unroll
    for (int j = 0; j < 7; ++j) dcoef[j * C + c] = k[j];
}

template <typename T, int L, int U, int ACT>
__device__ void gpunet_bn_bwd_spatial_impl(const T *dy, const T *x, T m, T is, T g, T bt, T act_a, long long C,
                                           long long S, long long begin, long long end, double &s0, double &s1) {
    GpunetBwdF<T, L, ACT> f;
    f.x = x; f.dy = dy; f.m = m; f.is = is; f.g = g; f.bt = bt; f.act_a = act_a; f.s0 = 0.0; f.s1 = 0.0;
    gpunet_channel_loop<T, L, 2 * L, U>(C, S, (long long)blockIdx.x, begin, end, f);
    s0 = f.s0; s1 = f.s1;
}

template <typename T>
__device__ void gpunet_bn_bwd_reduce_spatial(const T *dy, const T *x, const T *mean, const T *invstd,
                                             const T *gamma, const T *beta, int affine, int act,
                                             double act_a, long long N, long long C, long long S, long long chunk,
                                             double *part, unsigned int *counters, T *dgamma, T *dbeta,
                                             int batch_stats, double inv_m, T *dcoef) {
    const int L = GpunetVec<T>::lanes;
    long long c = blockIdx.x;
    int nparts = gridDim.y;
    long long total = N * S;
    long long begin = (long long)blockIdx.y * chunk;
    long long end = begin + chunk < total ? begin + chunk : total;
    T m = mean[c], is = invstd[c], g = affine ? gamma[c] : T(1), bt = affine ? beta[c] : T(0);
    double s0 = 0.0, s1 = 0.0;
    bool vec = S % L == 0 && chunk % L == 0 && reinterpret_cast<unsigned long long>(x) % 16 == 0 &&
               reinterpret_cast<unsigned long long>(dy) % 16 == 0;
#define GPUNET_BN_BWD_SPATIAL(ACT)                                                                       \
    if (vec) gpunet_bn_bwd_spatial_impl<T, L, 2, ACT>(dy, x, m, is, g, bt, T(act_a), C, S, begin, end, s0, s1); \
    else gpunet_bn_bwd_spatial_impl<T, 1, 4, ACT>(dy, x, m, is, g, bt, T(act_a), C, S, begin, end, s0, s1);
    GPUNET_FUSED_DISPATCH(act, GPUNET_BN_BWD_SPATIAL)
#undef GPUNET_BN_BWD_SPATIAL
    gpunet_block_sum2(s0, s1);
    if (threadIdx.x == 0) {
        double *q = part + 2 * (c * nparts + blockIdx.y);
        q[0] = s0; q[1] = s1;
    }
    if (gpunet_last_block(counters + c, nparts, threadIdx.x == 0) && threadIdx.x == 0)
        gpunet_bn_bwd_finalize(c, nparts, part, dgamma, dbeta, C, m, is, g, bt, batch_stats, inv_m, dcoef);
}

// Rows, the layout of the statistics: L channels per thread where C % L == 0 and x, dy are
// 16-byte aligned; U rows per iteration (x and dy: 2 U loads in flight).
template <typename T, int L, int ACT>
__device__ __forceinline__ void gpunet_bn_bwd_rows_impl(const T *dy, const T *x, const T *mean,
                                                        const T *invstd, const T *gamma, const T *beta,
                                                        int affine, T act_a, long long N, long long C,
                                                        long long chunk, double *part,
                                                        unsigned int *counters, T *dgamma, T *dbeta,
                                                        int batch_stats, double inv_m, T *dcoef,
                                                        double *sh) {
    const int U = L == 1 ? 4 : 2, Y = GPUNET_BN_ROWS_Y, X = GPUNET_BN_ROWS_X * L;
    int tx = threadIdx.x, ty = threadIdx.y;
    int nparts = gridDim.y;
    long long c0 = ((long long)blockIdx.x * GPUNET_BN_ROWS_X + tx) * L;
    long long begin = (long long)blockIdx.y * chunk;
    long long end = begin + chunk < N ? begin + chunk : N;
    double s0[L], s1[L];
    T m[L], is[L], g[L], bt[L];
#pragma unroll
    for (int j = 0; j < L; ++j) {
        s0[j] = s1[j] = 0.0;
        bool ok = c0 + j < C;
        m[j] = ok ? mean[c0 + j] : T(0); is[j] = ok ? invstd[c0 + j] : T(0);
        g[j] = ok && affine ? gamma[c0 + j] : T(1); bt[j] = ok && affine ? beta[c0 + j] : T(0);
    }
    if (c0 < C) {
        long long r = begin + ty;
        for (; r + (U - 1) * Y < end; r += U * Y) {
            GpunetLoad<T, L> xv[U], dv[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                xv[u] = gpunet_load<T, L>(x + (r + u * Y) * C + c0);
                dv[u] = gpunet_load<T, L>(dy + (r + u * Y) * C + c0);
            }
#pragma unroll
            for (int u = 0; u < U; ++u)
#pragma unroll
                for (int j = 0; j < L; ++j) {
                    T xhat, dz;
                    gpunet_bn_dz(xv[u].v[j], dv[u].v[j], m[j], is[j], g[j], bt[j], ACT, act_a, xhat, dz);
                    s0[j] += double(dz);
                    s1[j] = fma(double(dz), double(xhat), s1[j]);
                }
        }
        for (; r < end; r += Y) {
            GpunetLoad<T, L> xv = gpunet_load<T, L>(x + r * C + c0), dv = gpunet_load<T, L>(dy + r * C + c0);
#pragma unroll
            for (int j = 0; j < L; ++j) {
                T xhat, dz;
                gpunet_bn_dz(xv.v[j], dv.v[j], m[j], is[j], g[j], bt[j], ACT, act_a, xhat, dz);
                s0[j] += double(dz);
                s1[j] = fma(double(dz), double(xhat), s1[j]);
            }
        }
    }
#pragma unroll
    for (int j = 0; j < L; ++j) { sh[ty * X + tx * L + j] = s0[j]; sh[(Y + ty) * X + tx * L + j] = s1[j]; }
    __syncthreads();
    bool writer = ty == 0 && c0 < C;
    if (writer) {
#pragma unroll
        for (int j = 0; j < L; ++j) {
            for (int i = 1; i < Y; ++i) { s0[j] += sh[i * X + tx * L + j]; s1[j] += sh[(Y + i) * X + tx * L + j]; }
            double *q = part + 2 * ((c0 + j) * nparts + blockIdx.y);
            q[0] = s0[j]; q[1] = s1[j];
        }
    }
    if (gpunet_last_block(counters + blockIdx.x, nparts, writer) && writer)
#pragma unroll
        for (int j = 0; j < L; ++j)
            gpunet_bn_bwd_finalize(c0 + j, nparts, part, dgamma, dbeta, C, m[j], is[j], g[j], bt[j], batch_stats,
                                   inv_m, dcoef);
}

template <typename T>
__device__ void gpunet_bn_bwd_reduce_rows(const T *dy, const T *x, const T *mean, const T *invstd,
                                          const T *gamma, const T *beta, int affine, int act, double act_a,
                                          long long N,
                                          long long C, long long chunk, double *part, unsigned int *counters,
                                          T *dgamma, T *dbeta, int batch_stats, double inv_m, T *dcoef) {
    const int L = GpunetVec<T>::lanes;
    __shared__ double sh[2 * GPUNET_BN_ROWS_Y * GPUNET_BN_ROWS_X * GPUNET_BN_ROWS_LANES];
    bool vec = C % L == 0 && reinterpret_cast<unsigned long long>(x) % 16 == 0 &&
               reinterpret_cast<unsigned long long>(dy) % 16 == 0;
#define GPUNET_BN_BWD_ROWS(ACT)                                                                        \
    if (vec) gpunet_bn_bwd_rows_impl<T, L, ACT>(dy, x, mean, invstd, gamma, beta, affine, T(act_a), N, C, \
                                                chunk, part, counters, dgamma, dbeta, batch_stats, inv_m, \
                                                dcoef, sh);                                              \
    else gpunet_bn_bwd_rows_impl<T, 1, ACT>(dy, x, mean, invstd, gamma, beta, affine, T(act_a), N, C,    \
                                            chunk, part, counters, dgamma, dbeta, batch_stats, inv_m,     \
                                            dcoef, sh);
    GPUNET_FUSED_DISPATCH(act, GPUNET_BN_BWD_ROWS)
#undef GPUNET_BN_BWD_ROWS
}

// ------------------------------------------------------------------ elementwise passes
// gpunet_vector_pass (vector.cuh) with a cursor that tracks the element's channel: the channel of
// element j is (j / S) % C, computed once per vector and stepped lane by lane.
struct GpunetChannel { long long c, s; };

template <typename T> struct GpunetChannelOp {
    long long C, S;
    typedef GpunetChannel Cursor;
    __device__ __forceinline__ Cursor cursor(long long j) const {
        long long q = j / S;
        Cursor k = {q % C, j - q * S};
        return k;
    }
    __device__ __forceinline__ void advance(Cursor &k) const {
        if (++k.s == S) { k.s = 0; if (++k.c == C) k.c = 0; }
    }
};

// y = act((x - coef0[c]) * coef1[c] + coef2[c]) (gpunet_bn_fold); ACT a compile-time constant.
template <typename T, int ACT> struct GpunetBnApply : GpunetChannelOp<T> {
    const T *coef;
    T act_a;
    __device__ __forceinline__ T operator()(T xv, T, GpunetChannel &k) const {
        long long c = k.c, C = this->C;
        return gpunet_act_fwd(ACT, (xv - coef[c]) * coef[C + c] + coef[2 * C + c], act_a);
    }
};

// dx = g * invstd * (dz - dbeta / M - xhat * dgamma / M) from dcoef (gpunet_bn_bwd_finalize).
template <typename T, int ACT> struct GpunetBnDx : GpunetChannelOp<T> {
    const T *coef;                                // dcoef
    T act_a;
    __device__ __forceinline__ T operator()(T xv, T dyv, GpunetChannel &cur) const {
        const T *k = coef;
        long long c = cur.c, C = this->C;
        T xhat, dz;
        gpunet_bn_dz(xv, dyv, k[c], k[C + c], k[2 * C + c], k[3 * C + c], ACT, act_a, xhat, dz);
        return k[4 * C + c] * (dz - k[5 * C + c] - xhat * k[6 * C + c]);
    }
};

// Inference (or any call without batch statistics): coef and invstd from the running statistics,
// once per call and channel: invstd = 1 / sqrt(var + eps).
template <typename T>
__device__ void gpunet_bn_fold_running(const T *mean, const T *var, double eps, const T *gamma,
                                       const T *beta, int affine, long long C, T *invstd, T *coef) {
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < C;
         c += (long long)gridDim.x * blockDim.x) {
        T is = T(1.0 / sqrt(double(var[c]) + eps));
        invstd[c] = is;
        gpunet_bn_fold(c, C, mean[c], is, gamma, beta, affine, coef);
    }
}

// One elementwise pass of Op<T, ACT> (GpunetBnApply or GpunetBnDx) with the activation a
// compile-time constant: the switch over `act` is outside the per-element work.
template <template <typename, int> class Op, bool HAS_DY, typename T>
__device__ void gpunet_bn_pass(const T *x, const T *dy, T *out, const T *coef, int act, double act_a,
                               long long n, long long C, long long S) {
#define GPUNET_BN_PASS(ACT)                                                                            \
    {                                                                                                  \
        Op<T, ACT> op;                                                                                 \
        op.C = C; op.S = S; op.coef = coef; op.act_a = T(act_a);                                       \
        gpunet_vector_pass<T, HAS_DY>(x, dy, out, n, op);                                              \
    }
    GPUNET_FUSED_DISPATCH(act, GPUNET_BN_PASS)
#undef GPUNET_BN_PASS
}

// ------------------------------------------------------------------ extern "C" entry points
#define GPUNET_BN_ENTRY_POINTS(T)                                                                      \
extern "C" __global__ void bn_stats_spatial_##T(const T *x, long long N, long long C, long long S,       \
        long long chunk, double *part, unsigned int *counters, T *mean, T *invstd, T *rmean, T *rvar,   \
        double factor, double eps, int update_running, const T *gamma, const T *beta, int affine,      \
        T *coef) {                                                                                     \
    gpunet_bn_stats_spatial(x, N, C, S, chunk, part, counters, mean, invstd, rmean, rvar, factor, eps,  \
                            update_running, gamma, beta, affine, coef);                                \
}                                                                                                      \
extern "C" __global__ void bn_stats_rows_##T(const T *x, long long N, long long C, long long chunk,      \
        double *part, unsigned int *counters, T *mean, T *invstd, T *rmean, T *rvar, double factor,     \
        double eps, int update_running, const T *gamma, const T *beta, int affine, T *coef) {          \
    gpunet_bn_stats_rows(x, N, C, chunk, part, counters, mean, invstd, rmean, rvar, factor, eps,        \
                         update_running, gamma, beta, affine, coef);                                   \
}                                                                                                      \
extern "C" __global__ void bn_fold_running_##T(const T *mean, const T *var, double eps, const T *gamma, \
        const T *beta, int affine, long long C, T *invstd, T *coef) {                                  \
    gpunet_bn_fold_running(mean, var, eps, gamma, beta, affine, C, invstd, coef);                      \
}                                                                                                      \
extern "C" __global__ void bn_apply_##T(const T *x, T *y, const T *coef, int act, double act_a,         \
        long long n, long long C, long long S) {                                                       \
    gpunet_bn_pass<GpunetBnApply, false>(x, x, y, coef, act, act_a, n, C, S);                         \
}                                                                                                      \
extern "C" __global__ void bn_bwd_reduce_spatial_##T(const T *dy, const T *x, const T *mean,            \
        const T *invstd, const T *gamma, const T *beta, int affine, int act, double act_a, long long N, \
        long long C, long long S, long long chunk, double *part, unsigned int *counters, T *dgamma,     \
        T *dbeta, int batch_stats, double inv_m, T *dcoef) {                                           \
    gpunet_bn_bwd_reduce_spatial(dy, x, mean, invstd, gamma, beta, affine, act, act_a, N, C, S, chunk,  \
                                 part, counters, dgamma, dbeta, batch_stats, inv_m, dcoef);            \
}                                                                                                      \
extern "C" __global__ void bn_bwd_reduce_rows_##T(const T *dy, const T *x, const T *mean,               \
        const T *invstd, const T *gamma, const T *beta, int affine, int act, double act_a, long long N, \
        long long C, long long chunk, double *part, unsigned int *counters, T *dgamma, T *dbeta,        \
        int batch_stats, double inv_m, T *dcoef) {                                                     \
    gpunet_bn_bwd_reduce_rows(dy, x, mean, invstd, gamma, beta, affine, act, act_a, N, C, chunk, part,  \
                              counters, dgamma, dbeta, batch_stats, inv_m, dcoef);                     \
}                                                                                                      \
extern "C" __global__ void bn_bwd_dx_##T(const T *dy, const T *x, T *dx, const T *dcoef, int act,       \
        double act_a, long long n, long long C, long long S) {                                         \
    gpunet_bn_pass<GpunetBnDx, true>(x, dy, dx, dcoef, act, act_a, n, C, S);                           \
}

GPUNET_BN_ENTRY_POINTS(float)
GPUNET_BN_ENTRY_POINTS(double)

#endif  // GPUNET_BATCHNORM_CUH
