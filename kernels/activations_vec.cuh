// Vectorized RawKernels for contiguous float32 / float64 activations (needs activations.cuh first).
//
// Why: cupy.ElementwiseKernel tops out near 1.65 TB/s on an H200 while a kernel that moves one
// 16-byte vector per thread reaches the copy rate (~4 TB/s) -- see shared/GPU_NOTES.md. Each thread
// loads one float4 (or double2), applies the scalar device function to each lane and stores one
// vector. The thread with index n_vec does the scalar tail (fewer than 4 or 2 elements). Callers
// launch n_vec + 1 threads and pass 16-byte-aligned pointers (checked on the host).
//
// Kernel names: NAME_fwd_float, NAME_fwd_double, NAME_bwd_float, NAME_bwd_double.

#define GPUNET_VEC_PROLOGUE(LANES)                                                                \
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;                               \
    long long n_vec = n / LANES;

#define GPUNET_VEC_KERNELS(NAME)                                                                  \
extern "C" __global__ void NAME##_fwd_float(const float* __restrict__ x, float* __restrict__ y,  \
                                             long long n, float a, float b) {                     \
    GPUNET_VEC_PROLOGUE(4)                                                                        \
    if (i < n_vec) {                                                                              \
        float4 v = reinterpret_cast<const float4*>(x)[i];                                         \
        v.x = gpunet_##NAME##_fwd(v.x, a, b); v.y = gpunet_##NAME##_fwd(v.y, a, b);               \
        v.z = gpunet_##NAME##_fwd(v.z, a, b); v.w = gpunet_##NAME##_fwd(v.w, a, b);               \
        reinterpret_cast<float4*>(y)[i] = v;                                                      \
    } else if (i == n_vec) {                                                                      \
        for (long long j = n_vec * 4; j < n; ++j) y[j] = gpunet_##NAME##_fwd(x[j], a, b);         \
    }                                                                                             \
}                                                                                                 \
extern "C" __global__ void NAME##_fwd_double(const double* __restrict__ x, double* __restrict__ y,\
                                              long long n, double a, double b) {                  \
    GPUNET_VEC_PROLOGUE(2)                                                                        \
    if (i < n_vec) {                                                                              \
        double2 v = reinterpret_cast<const double2*>(x)[i];                                       \
        v.x = gpunet_##NAME##_fwd(v.x, a, b); v.y = gpunet_##NAME##_fwd(v.y, a, b);               \
        reinterpret_cast<double2*>(y)[i] = v;                                                     \
    } else if (i == n_vec) {                                                                      \
        for (long long j = n_vec * 2; j < n; ++j) y[j] = gpunet_##NAME##_fwd(x[j], a, b);         \
    }                                                                                             \
}                                                                                                 \
extern "C" __global__ void NAME##_bwd_float(const float* __restrict__ dy,                         \
        const float* __restrict__ x, float* __restrict__ dx, long long n, float a, float b) {     \
    GPUNET_VEC_PROLOGUE(4)                                                                        \
    if (i < n_vec) {                                                                              \
        float4 g = reinterpret_cast<const float4*>(dy)[i];                                        \
        float4 v = reinterpret_cast<const float4*>(x)[i];                                         \
        g.x = gpunet_##NAME##_bwd(g.x, v.x, a, b); g.y = gpunet_##NAME##_bwd(g.y, v.y, a, b);     \
        g.z = gpunet_##NAME##_bwd(g.z, v.z, a, b); g.w = gpunet_##NAME##_bwd(g.w, v.w, a, b);     \
        reinterpret_cast<float4*>(dx)[i] = g;                                                     \
    } else if (i == n_vec) {                                                                      \
        for (long long j = n_vec * 4; j < n; ++j) dx[j] = gpunet_##NAME##_bwd(dy[j], x[j], a, b); \
    }                                                                                             \
}                                                                                                 \
extern "C" __global__ void NAME##_bwd_double(const double* __restrict__ dy,                       \
        const double* __restrict__ x, double* __restrict__ dx, long long n, double a, double b) { \
    GPUNET_VEC_PROLOGUE(2)                                                                        \
    if (i < n_vec) {                                                                              \
        double2 g = reinterpret_cast<const double2*>(dy)[i];                                      \
        double2 v = reinterpret_cast<const double2*>(x)[i];                                       \
        g.x = gpunet_##NAME##_bwd(g.x, v.x, a, b); g.y = gpunet_##NAME##_bwd(g.y, v.y, a, b);     \
        reinterpret_cast<double2*>(dx)[i] = g;                                                    \
    } else if (i == n_vec) {                                                                      \
        for (long long j = n_vec * 2; j < n; ++j) dx[j] = gpunet_##NAME##_bwd(dy[j], x[j], a, b); \
    }                                                                                             \
}

GPUNET_VEC_KERNELS(sigmoid)
GPUNET_VEC_KERNELS(tanh)
GPUNET_VEC_KERNELS(relu)
GPUNET_VEC_KERNELS(leaky_relu)
GPUNET_VEC_KERNELS(elu)
GPUNET_VEC_KERNELS(selu)
GPUNET_VEC_KERNELS(gelu)
GPUNET_VEC_KERNELS(gelu_tanh)
GPUNET_VEC_KERNELS(softplus)
GPUNET_VEC_KERNELS(silu)

// PReLU: leaky_relu with one slope per channel. Contiguous x viewed as (outer, C, inner); the slope
// of element j is w[(j / inner) % C]. Scalar loads: PReLU is not a hot path.
template <typename T>
__device__ __forceinline__ void gpunet_prelu_fwd_impl(const T* x, const T* w, T* y, long long n,
                                                      long long C, long long inner) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) y[j] = gpunet_leaky_relu_fwd(x[j], w[(j / inner) % C], T(0));
}
template <typename T>
__device__ __forceinline__ void gpunet_prelu_bwd_impl(const T* dy, const T* x, const T* w, T* dx,
                                                      T* dw_elem, long long n, long long C,
                                                      long long inner) {
    // dx per element; dw_elem holds x * dy where x <= 0 (summed per channel on the host side).
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < n) {
        T xv = x[j];
        dx[j] = gpunet_leaky_relu_bwd(dy[j], xv, w[(j / inner) % C], T(0));
        dw_elem[j] = xv > T(0) ? T(0) : xv * dy[j];
    }
}
extern "C" __global__ void prelu_fwd_float(const float* x, const float* w, float* y, long long n,
                                           long long C, long long inner) {
    gpunet_prelu_fwd_impl(x, w, y, n, C, inner);
}
extern "C" __global__ void prelu_fwd_double(const double* x, const double* w, double* y, long long n,
                                            long long C, long long inner) {
    gpunet_prelu_fwd_impl(x, w, y, n, C, inner);
}
extern "C" __global__ void prelu_bwd_float(const float* dy, const float* x, const float* w, float* dx,
                                           float* dw_elem, long long n, long long C, long long inner) {
    gpunet_prelu_bwd_impl(dy, x, w, dx, dw_elem, n, C, inner);
}
extern "C" __global__ void prelu_bwd_double(const double* dy, const double* x, const double* w,
                                            double* dx, double* dw_elem, long long n, long long C,
                                            long long inner) {
    gpunet_prelu_bwd_impl(dy, x, w, dx, dw_elem, n, C, inner);
}

// Maxout: contiguous x viewed as (outer, C, pieces, inner) -> y (outer, C, inner), y = max over
// pieces. One thread per output element. The winner is the first maximum; a NaN wins (NaN out),
// like numpy.argmax. Backward recomputes the winner and writes every piece (dy or 0), so dx needs
// no zero fill.
template <typename T>
__device__ __forceinline__ long long gpunet_maxout_winner(const T* x, long long base, long long pieces,
                                                          long long inner) {
    long long win = 0;
    T best = x[base];
    for (long long k = 1; k < pieces && !isnan(best); ++k) {
        T v = x[base + k * inner];
        if (v > best || isnan(v)) { best = v; win = k; }
    }
    return win;
}
template <typename T>
__device__ __forceinline__ long long gpunet_maxout_base(long long o, long long pieces, long long inner) {
    long long s = o % inner, oc = o / inner;   // oc = outer * C + c
    return oc * pieces * inner + s;
}
template <typename T>
__device__ __forceinline__ void gpunet_maxout_fwd_impl(const T* x, T* y, long long n_out,
                                                       long long pieces, long long inner) {
    long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (o < n_out) {
        long long base = gpunet_maxout_base<T>(o, pieces, inner);
        y[o] = x[base + gpunet_maxout_winner(x, base, pieces, inner) * inner];
    }
}
template <typename T>
__device__ __forceinline__ void gpunet_maxout_bwd_impl(const T* dy, const T* x, T* dx, long long n_out,
                                                       long long pieces, long long inner) {
    long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (o < n_out) {
        long long base = gpunet_maxout_base<T>(o, pieces, inner);
        long long win = gpunet_maxout_winner(x, base, pieces, inner);
        for (long long k = 0; k < pieces; ++k) dx[base + k * inner] = k == win ? dy[o] : T(0);
    }
}
extern "C" __global__ void maxout_fwd_float(const float* x, float* y, long long n_out, long long pieces,
                                            long long inner) {
    gpunet_maxout_fwd_impl(x, y, n_out, pieces, inner);
}
extern "C" __global__ void maxout_fwd_double(const double* x, double* y, long long n_out,
                                             long long pieces, long long inner) {
    gpunet_maxout_fwd_impl(x, y, n_out, pieces, inner);
}
extern "C" __global__ void maxout_bwd_float(const float* dy, const float* x, float* dx, long long n_out,
                                            long long pieces, long long inner) {
    gpunet_maxout_bwd_impl(dy, x, dx, n_out, pieces, inner);
}
extern "C" __global__ void maxout_bwd_double(const double* dy, const double* x, double* dx,
                                             long long n_out, long long pieces, long long inner) {
    gpunet_maxout_bwd_impl(dy, x, dx, n_out, pieces, inner);
}
