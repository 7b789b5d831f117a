// Fused batch normalization (Ioffe & Szegedy 2015) with an optional activation after it.
// Needs generated.cuh, vector.cuh, activations.cuh and fused_switch.cuh first (the activation device functions and
// the vector pass are reused, not rewritten).
//
// Layout: x contiguous, viewed as (N, C, S): channel axis 1, S = product of the spatial sizes
// (S = 1 for (N, C)). Statistics per channel over M = N * S values.
//
// Forward, training (2 launches, 3 passes over memory):
//   bn_stats_{rows,spatial}: one read of x. Each thread keeps a Welford state in double (so float32
//     input near 1e30 cannot overflow the variance), merged across threads with Chan's formula,
//     one partial (count, mean, M2) per block. The last block of each channel (atomic counter)
//     merges the partials in a fixed order -> mean, invstd = 1 / sqrt(M2 / M + eps), and updates the
//     running statistics in place with the unbiased variance M2 / (M - 1). No E[x^2] - E[x]^2.
//   bn_apply: one read of x, one write of y = act((x - mean) * gamma * invstd + beta).
// Backward (2 launches, 5 passes):
//   bn_bwd_reduce_{rows,spatial}: reads x, dy; dz = dy * act'(z) with z recomputed from x;
//     per channel sum(dz) = dbeta and sum(dz * xhat) = dgamma (double accumulation, last-block merge).
//   bn_bwd_dx: reads x, dy, writes dx = gamma * invstd * (dz - dbeta / M - xhat * dgamma / M)
//     (training), or gamma * invstd * dz (statistics were constants: running statistics).
//
// Block shapes: "rows" kernels (S == 1) use 32 channels x 8 row groups so that a warp reads 32
// consecutive channels of one row (coalesced); "spatial" kernels give each block a chunk of one
// channel's N*S values. Grids are sized on the host to fill the chip.

#ifndef GPUNET_BATCHNORM_CUH
#define GPUNET_BATCHNORM_CUH

#define GPUNET_BN_THREADS 256
#define GPUNET_BN_ROWS_X 32
#define GPUNET_BN_ROWS_Y 8

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
template <typename T>
__device__ void gpunet_bn_finalize(long long c, int nparts, const double *part, T *mean_out,
                                   T *invstd_out, T *running_mean, T *running_var, double factor,
                                   double eps, int update_running) {
    GpunetWelford w = {0.0, 0.0, 0.0};
    for (int p = 0; p < nparts; ++p) {
        const double *q = part + 3 * (c * nparts + p);
        GpunetWelford b = {__ldcg(q), __ldcg(q + 1), __ldcg(q + 2)};
        gpunet_chan_merge(w, b);
    }
    double var = w.m2 / w.n;                      // biased: used to normalize
    mean_out[c] = T(w.mean);
    invstd_out[c] = T(1.0 / sqrt(var + eps));
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
                                        int update_running) {
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
                           update_running);
}

// Rows (S == 1): grid (ceil(C / 32), nparts), block (32, 8). Block p reads rows
// [p*chunk, (p+1)*chunk) of 32 consecutive channels (a warp: 128 coalesced bytes of one row),
// eight rows per thread per iteration (eight loads in flight).
template <typename T>
__device__ void gpunet_bn_stats_rows(const T *x, long long N, long long C, long long chunk, double *part,
                                     unsigned int *counters, T *mean_out, T *invstd_out, T *running_mean,
                                     T *running_var, double factor, double eps, int update_running) {
    __shared__ double sh[3][GPUNET_BN_ROWS_Y][GPUNET_BN_ROWS_X];
    const int U = 8, Y = GPUNET_BN_ROWS_Y;
    int tx = threadIdx.x, ty = threadIdx.y;
    int nparts = gridDim.y;
    long long c = (long long)blockIdx.x * GPUNET_BN_ROWS_X + tx;
    long long begin = (long long)blockIdx.y * chunk;
    long long end = begin + chunk < N ? begin + chunk : N;
    GpunetShifted acc = {0.0, 0.0, 0.0, 0.0};
    if (c < C && begin + ty < end) {
        acc.k = double(x[(begin + ty) * C + c]);
        long long r = begin + ty;
        for (; r + (U - 1) * Y < end; r += U * Y) {
            T v[U];
#pragma unroll
            for (int u = 0; u < U; ++u) v[u] = x[(r + u * Y) * C + c];
#pragma unroll
            for (int u = 0; u < U; ++u) acc.add(double(v[u]));
        }
        for (; r < end; r += Y) acc.add(double(x[r * C + c]));
    }
    GpunetWelford w = acc.welford();
    sh[0][ty][tx] = w.n; sh[1][ty][tx] = w.mean; sh[2][ty][tx] = w.m2;
    __syncthreads();
    bool writer = ty == 0 && c < C;
    if (writer) {
        for (int j = 1; j < GPUNET_BN_ROWS_Y; ++j) {
            GpunetWelford o = {sh[0][j][tx], sh[1][j][tx], sh[2][j][tx]};
            gpunet_chan_merge(w, o);
        }
        double *q = part + 3 * (c * nparts + blockIdx.y);
        q[0] = w.n; q[1] = w.mean; q[2] = w.m2;
    }
    if (gpunet_last_block(counters + blockIdx.x, nparts, writer) && writer)
        gpunet_bn_finalize(c, nparts, part, mean_out, invstd_out, running_mean, running_var, factor, eps,
                           update_running);
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

template <typename T>
__device__ void gpunet_bn_bwd_finalize(long long c, int nparts, const double *part, T *dgamma, T *dbeta) {
    double s0 = 0.0, s1 = 0.0;
    for (int p = 0; p < nparts; ++p) {
        const double *q = part + 2 * (c * nparts + p);
        s0 += __ldcg(q);
        s1 += __ldcg(q + 1);
    }
    dbeta[c] = T(s0);
    dgamma[c] = T(s1);
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
                                             double *part, unsigned int *counters, T *dgamma, T *dbeta) {
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
        gpunet_bn_bwd_finalize(c, nparts, part, dgamma, dbeta);
}

template <typename T, int ACT>
__device__ __forceinline__ void gpunet_bn_bwd_rows_impl(const T *dy, const T *x, long long C, long long c,
                                                        long long begin, long long end, T m, T is, T g,
                                                        T bt, T act_a, double &s0, double &s1) {
    const int U = 4, Y = GPUNET_BN_ROWS_Y;
    long long r = begin + threadIdx.y;
    for (; r + (U - 1) * Y < end; r += U * Y) {
        T xv[U], dv[U];
#pragma unroll
        for (int u = 0; u < U; ++u) { xv[u] = x[(r + u * Y) * C + c]; dv[u] = dy[(r + u * Y) * C + c]; }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            T xhat, dz;
            gpunet_bn_dz(xv[u], dv[u], m, is, g, bt, ACT, act_a, xhat, dz);
            s0 += double(dz);
            s1 = fma(double(dz), double(xhat), s1);
        }
    }
    for (; r < end; r += Y) {
        T xhat, dz;
        gpunet_bn_dz(x[r * C + c], dy[r * C + c], m, is, g, bt, ACT, act_a, xhat, dz);
        s0 += double(dz);
        s1 = fma(double(dz), double(xhat), s1);
    }
}

template <typename T>
__device__ void gpunet_bn_bwd_reduce_rows(const T *dy, const T *x, const T *mean, const T *invstd,
                                          const T *gamma, const T *beta, int affine, int act, double act_a,
                                          long long N,
                                          long long C, long long chunk, double *part, unsigned int *counters,
                                          T *dgamma, T *dbeta) {
    __shared__ double sh[2][GPUNET_BN_ROWS_Y][GPUNET_BN_ROWS_X];
    int tx = threadIdx.x, ty = threadIdx.y;
    int nparts = gridDim.y;
    long long c = (long long)blockIdx.x * GPUNET_BN_ROWS_X + tx;
    long long begin = (long long)blockIdx.y * chunk;
    long long end = begin + chunk < N ? begin + chunk : N;
    double s0 = 0.0, s1 = 0.0;
    if (c < C) {
        T m = mean[c], is = invstd[c], g = affine ? gamma[c] : T(1), bt = affine ? beta[c] : T(0);
#define GPUNET_BN_BWD_ROWS(ACT) gpunet_bn_bwd_rows_impl<T, ACT>(dy, x, C, c, begin, end, m, is, g, bt, T(act_a), s0, s1);
        GPUNET_FUSED_DISPATCH(act, GPUNET_BN_BWD_ROWS)
#undef GPUNET_BN_BWD_ROWS
    }
    sh[0][ty][tx] = s0; sh[1][ty][tx] = s1;
    __syncthreads();
    bool writer = ty == 0 && c < C;
    if (writer) {
        for (int j = 1; j < GPUNET_BN_ROWS_Y; ++j) { s0 += sh[0][j][tx]; s1 += sh[1][j][tx]; }
        double *q = part + 2 * (c * nparts + blockIdx.y);
        q[0] = s0; q[1] = s1;
    }
    if (gpunet_last_block(counters + blockIdx.x, nparts, writer) && writer)
        gpunet_bn_bwd_finalize(c, nparts, part, dgamma, dbeta);
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

// y = act((x - mean[c]) * scale[c] + shift[c]), scale = gamma * invstd, shift = beta. Inference
// passes the running mean and 1 / sqrt(running_var + eps), folded once per call on the host
// (is_var and eps are kept in the signature and must be 0: no per-element double math here).
template <typename T> struct GpunetBnApply : GpunetChannelOp<T> {
    const T *mean, *var_or_invstd, *gamma, *beta;
    int is_var, affine, act;
    double eps;
    T act_a;
    __device__ __forceinline__ T operator()(T xv, T, GpunetChannel &k) const {
        long long c = k.c;
        T is = var_or_invstd[c];
        T scale = affine ? gamma[c] * is : is;
        T shift = affine ? beta[c] : T(0);
        return gpunet_act_fwd(act, (xv - mean[c]) * scale + shift, act_a);
    }
};

// dx. batch_stats = 1: dx = gamma * invstd * (dz - dbeta / M - xhat * dgamma / M);
//     batch_stats = 0: dx = gamma * invstd * dz (statistics were constants).
template <typename T> struct GpunetBnDx : GpunetChannelOp<T> {
    const T *mean, *invstd, *gamma, *beta, *dgamma, *dbeta;
    int affine, act, batch_stats;
    double inv_m;
    T act_a;
    __device__ __forceinline__ T operator()(T xv, T dyv, GpunetChannel &k) const {
        long long c = k.c;
        T g = affine ? gamma[c] : T(1), bt = affine ? beta[c] : T(0), is = invstd[c];
        T xhat, dz;
        gpunet_bn_dz(xv, dyv, mean[c], is, g, bt, act, act_a, xhat, dz);
        if (batch_stats) dz = dz - T(double(dbeta[c]) * inv_m) - xhat * T(double(dgamma[c]) * inv_m);
        return g * is * dz;
    }
};

template <typename T>
__device__ void gpunet_bn_apply(const T *x, T *y, const T *mean, const T *var_or_invstd, int is_var,
                                const T *gamma, const T *beta, int affine, int act, double act_a,
                                double eps, long long n, long long C, long long S) {
    GpunetBnApply<T> op;
    op.C = C; op.S = S; op.mean = mean; op.var_or_invstd = var_or_invstd; op.gamma = gamma;
    op.beta = beta; op.is_var = is_var; op.affine = affine; op.act = act; op.eps = eps; op.act_a = T(act_a);
    gpunet_vector_pass<T, false>(x, x, y, n, op);
}

template <typename T>
__device__ void gpunet_bn_dx(const T *dy, const T *x, T *dx, const T *mean, const T *invstd,
                             const T *gamma, const T *beta, int affine, int act, double act_a,
                             const T *dgamma, const T *dbeta, int batch_stats, double inv_m, long long n,
                             long long C, long long S) {
    GpunetBnDx<T> op;
    op.C = C; op.S = S; op.mean = mean; op.invstd = invstd; op.gamma = gamma; op.beta = beta;
    op.dgamma = dgamma; op.dbeta = dbeta; op.affine = affine; op.act = act; op.batch_stats = batch_stats;
    op.inv_m = inv_m; op.act_a = T(act_a);
    gpunet_vector_pass<T, true>(x, dy, dx, n, op);
}

// ------------------------------------------------------------------ extern "C" entry points
#define GPUNET_BN_ENTRY_POINTS(T)                                                                      \
extern "C" __global__ void bn_stats_spatial_##T(const T *x, long long N, long long C, long long S,       \
        long long chunk, double *part, unsigned int *counters, T *mean, T *invstd, T *rmean, T *rvar,   \
        double factor, double eps, int update_running) {                                              \
    gpunet_bn_stats_spatial(x, N, C, S, chunk, part, counters, mean, invstd, rmean, rvar, factor, eps,  \
                            update_running);                                                           \
}                                                                                                      \
extern "C" __global__ void bn_stats_rows_##T(const T *x, long long N, long long C, long long chunk,      \
        double *part, unsigned int *counters, T *mean, T *invstd, T *rmean, T *rvar, double factor,     \
        double eps, int update_running) {                                                              \
    gpunet_bn_stats_rows(x, N, C, chunk, part, counters, mean, invstd, rmean, rvar, factor, eps,        \
                         update_running);                                                              \
}                                                                                                      \
extern "C" __global__ void bn_apply_##T(const T *x, T *y, const T *mean, const T *var_or_invstd,        \
        int is_var, const T *gamma, const T *beta, int affine, int act, double act_a, double eps,       \
        long long n, long long C, long long S) {                                                       \
    gpunet_bn_apply(x, y, mean, var_or_invstd, is_var, gamma, beta, affine, act, act_a, eps, n, C, S);  \
}                                                                                                      \
extern "C" __global__ void bn_bwd_reduce_spatial_##T(const T *dy, const T *x, const T *mean,            \
        const T *invstd, const T *gamma, const T *beta, int affine, int act, double act_a, long long N, \
        long long C, long long S, long long chunk, double *part, unsigned int *counters, T *dgamma,     \
        T *dbeta) {                                                                                    \
    gpunet_bn_bwd_reduce_spatial(dy, x, mean, invstd, gamma, beta, affine, act, act_a, N, C, S, chunk,  \
                                 part,                                                                 \
                                 counters, dgamma, dbeta);                                             \
}                                                                                                      \
extern "C" __global__ void bn_bwd_reduce_rows_##T(const T *dy, const T *x, const T *mean,               \
        const T *invstd, const T *gamma, const T *beta, int affine, int act, double act_a, long long N, \
        long long C, long long chunk, double *part, unsigned int *counters, T *dgamma, T *dbeta) {      \
    gpunet_bn_bwd_reduce_rows(dy, x, mean, invstd, gamma, beta, affine, act, act_a, N, C, chunk, part,  \
                              counters, dgamma, dbeta);                                                \
}                                                                                                      \
extern "C" __global__ void bn_bwd_dx_##T(const T *dy, const T *x, T *dx, const T *mean,                 \
        const T *invstd, const T *gamma, const T *beta, int affine, int act, double act_a,              \
        const T *dgamma, const T *dbeta, int batch_stats, double inv_m, long long n, long long C,       \
        long long S) {                                                                                 \
    gpunet_bn_dx(dy, x, dx, mean, invstd, gamma, beta, affine, act, act_a, dgamma, dbeta, batch_stats,  \
                 inv_m,                                                                                \
                 n, C, S);                                                                             \
}

GPUNET_BN_ENTRY_POINTS(float)
GPUNET_BN_ENTRY_POINTS(double)

#endif  // GPUNET_BATCHNORM_CUH
