// Convolution by im2col + cuBLAS, and max pooling, NCHW (gpunet/functional/conv.py and pooling.py
// state the math; kernels/shared/im2col_gemm.py the layout). One thread per value written, in a
// grid-stride loop.
//
// Index arithmetic is 32-bit: a 64-bit division is a ~70-instruction routine call on the GPU and
// these kernels divide on every value (tests/test_gpu_static.py holds every loop to that). The
// host (conv.py) keeps every launch under 2^31 values -- a conv launch covers one chunk of the
// batch (~8K columns), a pooling launch a slice of the planes -- and adds the 64-bit offset of the
// slice to the pointers itself.
//
// im2col: cols[r, m P + i Wo + j] = xpad[m, c, i sh + p - ph, j sw + q - pw], r = (c kh + p) kw + q,
//   P = Ho Wo, m the sample within the chunk. Consecutive threads write consecutive columns
//   (coalesced stores).
// col2im: the adjoint, gathered: each thread owns one dx value of the chunk and adds the dcols
//   entries of every tap that read it (no atomics: deterministic, in the CPU loop's order p, q).
// max pool forward: each thread scans one window; the first NaN wins, else the first maximum in
//   row-major window order; arg = its flat index h W + w in the (n, c) plane (int32).
// max pool backward: each thread owns one dx value and adds the dout of every window whose arg is
//   that value (gathered, no atomics).

#ifndef GPUNET_CONV_CUH
#define GPUNET_CONV_CUH

// the window of every kernel here, passed as eight int scalars (CuPy passes no structs)
struct gpunet_taps {
    int kh, kw, sh, sw, ph, pw, Ho, Wo;
};
#define GPUNET_TAPS_PARAMS int kh, int kw, int sh, int sw, int ph, int pw, int Ho, int Wo
#define GPUNET_TAPS gpunet_taps{kh, kw, sh, sw, ph, pw, Ho, Wo}

#define GPUNET_GRID_STRIDE(e, total)                                                               \
    for (unsigned e = blockIdx.x * blockDim.x + threadIdx.x; e < (unsigned)(total);               \
         e += gridDim.x * blockDim.x)

template <typename T>
__device__ void gpunet_im2col(const T *x, int nb, int C, int H, int W, gpunet_taps t, T *cols) {
    const unsigned P = t.Ho * t.Wo, L = nb * P, KK = t.kh * t.kw;
    GPUNET_GRID_STRIDE(e, C * KK * L) {
        unsigned r = e / L, col = e - r * L;
        unsigned c = r / KK, pq = r - c * KK, p = pq / t.kw, q = pq - p * t.kw;
        unsigned m = col / P, pi = col - m * P, i = pi / t.Wo, j = pi - i * t.Wo;
        int h = int(i) * t.sh + int(p) - t.ph, w = int(j) * t.sw + int(q) - t.pw;
        T v = T(0);
        if (h >= 0 && h < H && w >= 0 && w < W) v = x[((size_t(m) * C + c) * H + h) * W + w];
        cols[e] = v;
    }
}

template <typename T>
__device__ void gpunet_col2im(const T *dcols, int nb, int C, int H, int W, gpunet_taps t, T *dx) {
    const unsigned P = t.Ho * t.Wo, L = nb * P;
    GPUNET_GRID_STRIDE(e, nb * C * H * W) {
        unsigned row = e / W, w = e - row * W, plane = row / H, h = row - plane * H;
        unsigned m = plane / C, c = plane - m * C;
        T acc = T(0);
        for (int p = 0; p < t.kh; ++p) {
            int hi = int(h) + t.ph - p;  // = i sh for the output row i that reads (h, .) at tap p
            if (hi < 0 || hi % t.sh != 0 || hi / t.sh >= t.Ho) continue;
            int i = hi / t.sh;
            for (int q = 0; q < t.kw; ++q) {
                int wj = int(w) + t.pw - q;
                if (wj < 0 || wj % t.sw != 0 || wj / t.sw >= t.Wo) continue;
                unsigned r = (c * t.kh + p) * t.kw + q;
                acc += dcols[size_t(r) * L + m * P + i * t.Wo + wj / t.sw];
            }
        }
        dx[e] = acc;
    }
}

template <typename T>
__device__ void gpunet_max_pool_fwd(const T *x, int planes, int H, int W, gpunet_taps t, T *out,
                                    int *arg) {
    GPUNET_GRID_STRIDE(e, planes * t.Ho * t.Wo) {
        unsigned row = e / t.Wo, j = e - row * t.Wo, plane = row / t.Ho, i = row - plane * t.Ho;
        const T *xs = x + size_t(plane) * H * W;
        int h0 = int(i) * t.sh - t.ph, w0 = int(j) * t.sw - t.pw;
        int hlo = max(h0, 0), hhi = min(h0 + t.kh, H), wlo = max(w0, 0), whi = min(w0 + t.kw, W);
        T best = xs[hlo * W + wlo];
        int at = hlo * W + wlo;
        bool nan_seen = best != best;
        for (int h = hlo; h < hhi && !nan_seen; ++h)
            for (int w = wlo; w < whi; ++w) {
                T v = xs[h * W + w];
                if (v != v) {  // the first NaN wins
                    best = v;
                    at = h * W + w;
                    nan_seen = true;
                    break;
                }
                if (v > best) {
                    best = v;
                    at = h * W + w;
                }
            }
        out[e] = best;
        arg[e] = at;
    }
}

template <typename T>
__device__ void gpunet_max_pool_bwd(const T *dout, const int *arg, int planes, int H, int W,
                                    gpunet_taps t, T *dx) {
    GPUNET_GRID_STRIDE(e, planes * H * W) {
        unsigned row = e / W, w = e - row * W, plane = row / H, h = row - plane * H;
        // the windows that hold (h, w): i sh - ph <= h < i sh - ph + kh, the same for j
        int ilo = int(h) + t.ph - t.kh + 1, jlo = int(w) + t.pw - t.kw + 1;
        ilo = ilo > 0 ? (ilo + t.sh - 1) / t.sh : 0;
        jlo = jlo > 0 ? (jlo + t.sw - 1) / t.sw : 0;
        int ihi = min((int(h) + t.ph) / t.sh, t.Ho - 1), jhi = min((int(w) + t.pw) / t.sw, t.Wo - 1);
        const int self = int(h) * W + int(w);
        const size_t base = size_t(plane) * t.Ho * t.Wo;
        T acc = T(0);
        for (int i = ilo; i <= ihi; ++i)
            for (int j = jlo; j <= jhi; ++j)
                if (arg[base + i * t.Wo + j] == self) acc += dout[base + i * t.Wo + j];
        dx[e] = acc;
    }
}

#define GPUNET_CONV_KERNELS(T, SUFFIX)                                                             \
    extern "C" __global__ void im2col_##SUFFIX(const T *x, int nb, int C, int H, int W,           \
                                               GPUNET_TAPS_PARAMS, T *cols) {                     \
        gpunet_im2col(x, nb, C, H, W, GPUNET_TAPS, cols);                                          \
    }                                                                                              \
    extern "C" __global__ void col2im_##SUFFIX(const T *dcols, int nb, int C, int H, int W,       \
                                               GPUNET_TAPS_PARAMS, T *dx) {                       \
        gpunet_col2im(dcols, nb, C, H, W, GPUNET_TAPS, dx);                                        \
    }                                                                                              \
    extern "C" __global__ void max_pool_fwd_##SUFFIX(const T *x, int planes, int H, int W,        \
                                                     GPUNET_TAPS_PARAMS, T *out, int *arg) {      \
        gpunet_max_pool_fwd(x, planes, H, W, GPUNET_TAPS, out, arg);                               \
    }                                                                                              \
    extern "C" __global__ void max_pool_bwd_##SUFFIX(const T *dout, const int *arg, int planes,   \
                                                     int H, int W, GPUNET_TAPS_PARAMS, T *dx) {   \
        gpunet_max_pool_bwd(dout, arg, planes, H, W, GPUNET_TAPS, dx);                             \
    }

GPUNET_CONV_KERNELS(float, float)
GPUNET_CONV_KERNELS(double, double)

#endif  // GPUNET_CONV_CUH
