// Vectorized RawKernels for contiguous float32 / float64 activations (needs vector.cuh and
// activations.cuh first): each activation's device function mapped by gpunet_vector_pass (one
// 16-byte vector per thread, docs/gpu-notes.md). Callers launch n / lanes + 1 threads and pass
// 16-byte-aligned pointers (checked on the host).
//
// The kernels themselves (NAME_fwd_float, ..., one set per activation of the table) are spelled out
// in vector_kernels.cuh, written by python -m gpunet.kernels.generate.

// The lane ops of the activation kernels: Act is a struct with static fwd(x, a, b) and
// bwd(dy, x, a, b) (one per activation, in vector_kernels.cuh, generated from the table).
template <class Act, typename T> struct GpunetVecFwd {
    T a, b;
    typedef GpunetNoCursor Cursor;
    __device__ __forceinline__ Cursor cursor(long long) const { return Cursor(); }
    __device__ __forceinline__ void advance(Cursor &) const {}
    __device__ __forceinline__ T operator()(T x, T, Cursor &) const { return Act::fwd(x, a, b); }
};
template <class Act, typename T> struct GpunetVecBwd {
    T a, b;
    typedef GpunetNoCursor Cursor;
    __device__ __forceinline__ Cursor cursor(long long) const { return Cursor(); }
    __device__ __forceinline__ void advance(Cursor &) const {}
    __device__ __forceinline__ T operator()(T x, T dy, Cursor &) const { return Act::bwd(dy, x, a, b); }
};
template <class Act, typename T>
__device__ __forceinline__ void gpunet_vec_fwd(const T *__restrict__ x, T *__restrict__ y, long long n, T a, T b) {
    GpunetVecFwd<Act, T> op; op.a = a; op.b = b;
    gpunet_vector_pass<T, false>(x, x, y, n, op);
}
template <class Act, typename T>
__device__ __forceinline__ void gpunet_vec_bwd(const T *__restrict__ dy, const T *__restrict__ x, T *__restrict__ dx,
                                               long long n, T a, T b) {
    GpunetVecBwd<Act, T> op; op.a = a; op.b = b;
    gpunet_vector_pass<T, true>(x, dy, dx, n, op);
}

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
