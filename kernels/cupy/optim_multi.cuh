// Needs optim.cuh first (the update rules).
#ifndef GPUNET_OPTIM_MULTI_CUH
#define GPUNET_OPTIM_MULTI_CUH

// ------------------------------------------------------------------ one launch for all parameters
// The multi-tensor form (as PyTorch's foreach/fused optimizers): one launch updates every
// parameter of a step. `table` (device memory, int64) holds, for tensors i < nt:
//   [0, nt)        g_i      [nt, 2nt)    p_i      [2nt, 3nt)  state 1 (buf / m)   [3nt, 4nt) state 2 (v)
//   [4nt, 5nt)     n_i      [5nt, 6nt)   flags_i (SGD: first step of its momentum buffer)
//   [6nt, 7nt+1)   first block of tensor i (prefix sums; the last entry is the grid size)
// Block b updates elements [(b - start_t) * chunk, ...) of the tensor t whose blocks hold b; a
// thread takes 4 consecutive elements (one 16-byte access per array where the tensor's arrays
// are 16-byte aligned and the 4 are inside it).
#define GPUNET_MT_THREADS 256
#define GPUNET_MT_CHUNK (GPUNET_MT_THREADS * 4)

__device__ __forceinline__ int gpunet_mt_tensor(const long long *start, int nt, long long b) {
    int lo = 0, hi = nt - 1;                      // the last t with start[t] <= b
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (start[mid] <= b) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// 4 consecutive values in 16-byte accesses: one float4, or two double2. The pointers come from
// the table (generic pointers): __ldcg / __stcg make them global accesses (LDG/STG.E.128).
__device__ __forceinline__ void gpunet_ld4(const float *p, float v[4]) {
    float4 q = __ldcg(reinterpret_cast<const float4 *>(p));
    v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
__device__ __forceinline__ void gpunet_st4(float *p, const float v[4]) {
    float4 q; q.x = v[0]; q.y = v[1]; q.z = v[2]; q.w = v[3];
    __stcg(reinterpret_cast<float4 *>(p), q);
}
__device__ __forceinline__ void gpunet_ld4(const double *p, double v[4]) {
    double2 a = __ldcg(reinterpret_cast<const double2 *>(p));
    double2 b = __ldcg(reinterpret_cast<const double2 *>(p) + 1);
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
}
__device__ __forceinline__ void gpunet_st4(double *p, const double v[4]) {
    double2 a, b; a.x = v[0]; a.y = v[1]; b.x = v[2]; b.y = v[3];
    __stcg(reinterpret_cast<double2 *>(p), a);
    __stcg(reinterpret_cast<double2 *>(p) + 1, b);
}

template <typename T, typename Update>
__device__ __forceinline__ void gpunet_mt_pass(const long long *table, int nt, const Update &update) {
    const long long *start = table + 6 * nt;
    int t = gpunet_mt_tensor(start, nt, blockIdx.x);
    long long n = table[4 * nt + t];
    long long i = (blockIdx.x - start[t]) * (long long)GPUNET_MT_CHUNK + 4LL * threadIdx.x;
    if (i >= n) return;
    T *g = reinterpret_cast<T *>(table[t]), *p = reinterpret_cast<T *>(table[nt + t]);
    T *s1 = reinterpret_cast<T *>(table[2 * nt + t]), *s2 = reinterpret_cast<T *>(table[3 * nt + t]);
    int flag = int(table[5 * nt + t]);
    unsigned long long any = reinterpret_cast<unsigned long long>(g + i) |
                             reinterpret_cast<unsigned long long>(p + i) |
                             (s1 ? reinterpret_cast<unsigned long long>(s1 + i) : 0ULL) |
                             (s2 ? reinterpret_cast<unsigned long long>(s2 + i) : 0ULL);
    if (n - i >= 4 && any % 16 == 0) {           // the common case: four values, 16-byte accesses
        T gv[4], pv[4], av[4], bv[4];
        gpunet_ld4(g + i, gv); gpunet_ld4(p + i, pv);
        if (s1) gpunet_ld4(s1 + i, av);
        if (s2) gpunet_ld4(s2 + i, bv);
#pragma unroll
        for (int j = 0; j < 4; ++j) update(gv[j], pv[j], av[j], bv[j], flag);
        gpunet_st4(p + i, pv);
        if (s1) gpunet_st4(s1 + i, av);
        if (s2) gpunet_st4(s2 + i, bv);
        return;
    }
    int k = n - i < 4 ? int(n - i) : 4;
    for (int j = 0; j < k; ++j) {
        T a = s1 ? s1[i + j] : T(0), b = s2 ? s2[i + j] : T(0), pv = p[i + j];
        update(g[i + j], pv, a, b, flag);
        p[i + j] = pv;
        if (s1) s1[i + j] = a;
        if (s2) s2[i + j] = b;
    }
}

template <typename T> struct GpunetSgdMt {
    double lr, mu, damp, wd;
    int nesterov;
    __device__ __forceinline__ void operator()(T g, T &p, T &buf, T &, int first) const {
        if (mu != 0.0) gpunet_sgd_update(g, p, buf, lr, mu, damp, wd, nesterov, first);
        else gpunet_sgd_plain_update(g, p, lr, wd);
    }
};

template <typename T> struct GpunetAdamMt {
    double lr, b1, b2, eps, wd, bc1, bc2;
    int decoupled;
    __device__ __forceinline__ void operator()(T g, T &p, T &m, T &v, int) const {
        gpunet_adam_update(g, p, m, v, lr, b1, b2, eps, wd, bc1, bc2, decoupled);
    }
};

#define GPUNET_MT_ENTRY_POINTS(T)                                                                      \
extern "C" __global__ void sgd_multi_##T(const long long *table, int nt, double lr, double mu,          \
                                         double damp, double wd, int nesterov) {                       \
    GpunetSgdMt<T> u = {lr, mu, damp, wd, nesterov};                                                   \
    gpunet_mt_pass<T>(table, nt, u);                                                                   \
}                                                                                                      \
extern "C" __global__ void adam_multi_##T(const long long *table, int nt, double lr, double b1,         \
                                          double b2, double eps, double wd, double bc1, double bc2,    \
                                          int decoupled) {                                             \
    GpunetAdamMt<T> u = {lr, b1, b2, eps, wd, bc1, bc2, decoupled};                                    \
    gpunet_mt_pass<T>(table, nt, u);                                                                   \
}

GPUNET_MT_ENTRY_POINTS(float)
GPUNET_MT_ENTRY_POINTS(double)

#endif  // GPUNET_OPTIM_MULTI_CUH
