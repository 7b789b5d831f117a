// One elementwise pass over contiguous float32/float64 arrays, 16 bytes per thread: the pattern of
// every fast elementwise kernel of gpunet (activations, BatchNorm's normalize and dx passes).
//
// Why: cupy.ElementwiseKernel tops out near 1.65 TB/s on an H200 while a kernel that moves one
// 16-byte vector per thread reaches the copy rate (~4 TB/s) -- docs/gpu-notes.md. Thread i maps
// vector i (4 floats or 2 doubles); thread n_vec maps the scalar tail. Callers launch n / lanes + 1
// threads and pass 16-byte-aligned pointers (checked on the host).
//
// The op maps one lane: out = op(x, dy, cursor), where the cursor carries what the op needs to know
// about the element's position (BatchNorm: its channel) and op.advance(cursor) steps it.

#ifndef GPUNET_VECTOR_CUH
#define GPUNET_VECTOR_CUH

template <typename T> struct GpunetVec;
template <> struct GpunetVec<float> { typedef float4 type; enum { lanes = 4 }; };
template <> struct GpunetVec<double> { typedef double2 type; enum { lanes = 2 }; };

template <typename T> union GpunetLanes {
    typename GpunetVec<T>::type vec;
    T s[GpunetVec<T>::lanes];
};

// HAS_DY = false reads no dy.
template <typename T, bool HAS_DY, typename Op>
__device__ __forceinline__ void gpunet_vector_pass(const T *x, const T *dy, T *out, long long n, const Op &op) {
    const int L = GpunetVec<T>::lanes;
    typedef typename GpunetVec<T>::type V;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long n_vec = n / L;
    long long j0, j1;
    if (i < n_vec) { j0 = i * L; j1 = j0 + L; }
    else if (i == n_vec) { j0 = n_vec * L; j1 = n; }
    else return;
    typename Op::Cursor cursor = op.cursor(j0);
    if (j1 - j0 == L) {
        GpunetLanes<T> ux, ud;
        ux.vec = reinterpret_cast<const V *>(x)[i];
        if (HAS_DY) ud.vec = reinterpret_cast<const V *>(dy)[i];
        for (int k = 0; k < L; ++k) {
            ux.s[k] = op(ux.s[k], HAS_DY ? ud.s[k] : T(0), cursor);
            op.advance(cursor);
        }
        reinterpret_cast<V *>(out)[i] = ux.vec;
    } else {
        for (long long j = j0; j < j1; ++j) {
            out[j] = op(x[j], HAS_DY ? dy[j] : T(0), cursor);
            op.advance(cursor);
        }
    }
}

// The cursor of ops that do not care where an element is.
struct GpunetNoCursor {};

#endif  // GPUNET_VECTOR_CUH
