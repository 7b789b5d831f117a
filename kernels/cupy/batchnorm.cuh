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

// A batch of up to 4 values is summarized exactly (two passes over registers) and merged, so
// there is one division per 4 values instead of one per value.
struct GpunetBatch4 { double v[4]; int k; };

__device__ __forceinline__ void gpunet_batch_flush(GpunetWelford &w, GpunetBatch4 &b) {
    if (b.k == 0) return;
    double s = 0.0;
    for (int i = 0; i < b.k; ++i) s += b.v[i];
    GpunetWelford bw;
    bw.n = b.k;
    bw.mean = s / b.k;
    bw.m2 = 0.0;
    for (int i = 0; i < b.k; ++i) { double d = b.v[i] - bw.mean; bw.m2 += d * d; }
    gpunet_chan_merge(w, bw);
    b.k = 0;
}

__device__ __forceinline__ void gpunet_batch_push(GpunetWelford &w, GpunetBatch4 &b, double v) {
    b.v[b.k++] = v;
    if (b.k == 4) gpunet_batch_flush(w, b);
}

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

// True in exactly one block of a group: the last to finish. Partials written before are visible.
__device__ __forceinline__ bool gpunet_last_block(unsigned int *counter, unsigned int group_size) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) {
        unsigned int done = atomicAdd(counter, 1u);
        last = (done == group_size - 1);
        if (last) *counter = 0u;                  // ready for the next launch
    }
    __syncthreads();
    return last;
}

// ------------------------------------------------------------------ forward statistics
// Spatial: grid (C, nparts) -- channels on x, which takes up to 2^31 - 1 blocks. Block p of channel c reads elements [p*chunk, (p+1)*chunk) of the
// channel's N*S values; element k lives at ((k / S) * C + c) * S + k % S.
template <typename T>
__device__ void gpunet_bn_stats_spatial(const T *x, long long N, long long C, long long S, long long chunk,
                                        double *part, unsigned int *counters, T *mean_out, T *invstd_out,
                                        T *running_mean, T *running_var, double factor, double eps,
                                        int update_running) {
    __shared__ double sh[3][GPUNET_BN_THREADS];
    long long c = blockIdx.x;
    int nparts = gridDim.y;
    long long total = N * S;
    long long begin = (long long)blockIdx.y * chunk;
    long long end = begin + chunk < total ? begin + chunk : total;
    GpunetWelford w = {0.0, 0.0, 0.0};
    GpunetBatch4 b; b.k = 0;
    for (long long k = begin + threadIdx.x; k < end; k += blockDim.x) {
        long long n = k / S, s = k - n * S;
        gpunet_batch_push(w, b, double(x[(n * C + c) * S + s]));
    }
    gpunet_batch_flush(w, b);
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
    if (threadIdx.x == 0) {
        double *q = part + 3 * (c * nparts + blockIdx.y);
        q[0] = sh[0][0]; q[1] = sh[1][0]; q[2] = sh[2][0];
    }
    if (gpunet_last_block(counters + c, nparts) && threadIdx.x == 0)
        gpunet_bn_finalize(c, nparts, part, mean_out, invstd_out, running_mean, running_var, factor, eps,
                           update_running);
}

// Rows (S == 1): grid (ceil(C / 32), nparts), block (32, 8). Block p reads rows
// [p*chunk, (p+1)*chunk) of 32 consecutive channels.
template <typename T>
__device__ void gpunet_bn_stats_rows(const T *x, long long N, long long C, long long chunk, double *part,
                                     unsigned int *counters, T *mean_out, T *invstd_out, T *running_mean,
                                     T *running_var, double factor, double eps, int update_running) {
    __shared__ double sh[3][GPUNET_BN_ROWS_Y][GPUNET_BN_ROWS_X];
    int tx = threadIdx.x, ty = threadIdx.y;
    int nparts = gridDim.y;
    long long c = (long long)blockIdx.x * GPUNET_BN_ROWS_X + tx;
    long long begin = (long long)blockIdx.y * chunk;
    long long end = begin + chunk < N ? begin + chunk : N;
    GpunetWelford w = {0.0, 0.0, 0.0};
    GpunetBatch4 b; b.k = 0;
    if (c < C)
        for (long long r = begin + ty; r < end; r += GPUNET_BN_ROWS_Y) gpunet_batch_push(w, b, double(x[r * C + c]));
    gpunet_batch_flush(w, b);
    sh[0][ty][tx] = w.n; sh[1][ty][tx] = w.mean; sh[2][ty][tx] = w.m2;
    __syncthreads();
    if (ty == 0 && c < C) {
        for (int j = 1; j < GPUNET_BN_ROWS_Y; ++j) {
            GpunetWelford o = {sh[0][j][tx], sh[1][j][tx], sh[2][j][tx]};
            gpunet_chan_merge(w, o);
        }
        double *q = part + 3 * (c * nparts + blockIdx.y);
        q[0] = w.n; q[1] = w.mean; q[2] = w.m2;
    }
    if (gpunet_last_block(counters + blockIdx.x, nparts) && ty == 0 && c < C)
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

template <typename T>
__device__ void gpunet_bn_bwd_reduce_spatial(const T *dy, const T *x, const T *mean, const T *invstd,
                                             const T *gamma, const T *beta, int affine, int act,
                                             double act_a, long long N, long long C, long long S, long long chunk,
                                             double *part, unsigned int *counters, T *dgamma, T *dbeta) {
    __shared__ double sh[2][GPUNET_BN_THREADS];
    long long c = blockIdx.x;
    int nparts = gridDim.y;
    long long total = N * S;
    long long begin = (long long)blockIdx.y * chunk;
    long long end = begin + chunk < total ? begin + chunk : total;
    T m = mean[c], is = invstd[c], g = affine ? gamma[c] : T(1), bt = affine ? beta[c] : T(0);
    double s0 = 0.0, s1 = 0.0;
    for (long long k = begin + threadIdx.x; k < end; k += blockDim.x) {
        long long n = k / S, s = k - n * S, idx = (n * C + c) * S + s;
        T xhat, dz;
        gpunet_bn_dz(x[idx], dy[idx], m, is, g, bt, act, T(act_a), xhat, dz);
        s0 += double(dz);
        s1 += double(dz) * double(xhat);
    }
    sh[0][threadIdx.x] = s0; sh[1][threadIdx.x] = s1;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            sh[0][threadIdx.x] += sh[0][threadIdx.x + stride];
            sh[1][threadIdx.x] += sh[1][threadIdx.x + stride];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        double *q = part + 2 * (c * nparts + blockIdx.y);
        q[0] = sh[0][0]; q[1] = sh[1][0];
    }
    if (gpunet_last_block(counters + c, nparts) && threadIdx.x == 0)
        gpunet_bn_bwd_finalize(c, nparts, part, dgamma, dbeta);
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
        for (long long r = begin + ty; r < end; r += GPUNET_BN_ROWS_Y) {
            T xhat, dz;
            gpunet_bn_dz(x[r * C + c], dy[r * C + c], m, is, g, bt, act, T(act_a), xhat, dz);
            s0 += double(dz);
            s1 += double(dz) * double(xhat);
        }
    }
    sh[0][ty][tx] = s0; sh[1][ty][tx] = s1;
    __syncthreads();
    if (ty == 0 && c < C) {
        for (int j = 1; j < GPUNET_BN_ROWS_Y; ++j) { s0 += sh[0][j][tx]; s1 += sh[1][j][tx]; }
        double *q = part + 2 * (c * nparts + blockIdx.y);
        q[0] = s0; q[1] = s1;
    }
    if (gpunet_last_block(counters + blockIdx.x, nparts) && ty == 0 && c < C)
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
// passes the running statistics: mean = running_mean, var_or_invstd = running_var, is_var = 1.
template <typename T> struct GpunetBnApply : GpunetChannelOp<T> {
    const T *mean, *var_or_invstd, *gamma, *beta;
    int is_var, affine, act;
    double eps;
    T act_a;
    __device__ __forceinline__ T operator()(T xv, T, GpunetChannel &k) const {
        long long c = k.c;
        T is = is_var ? T(1.0 / sqrt(double(var_or_invstd[c]) + eps)) : var_or_invstd[c];
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
