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

// values per thread and loop iteration in every kernel here: value u of consecutive threads are
// consecutive (coalesced stores), and the gathers of a thread's values are independent, so it
// keeps GPUNET_IM2COL_ILP loads in flight (one would leave the kernels latency-bound: Little's
// law, tests/test_gpu_static.py)
#define GPUNET_IM2COL_ILP 4

template <typename T>
__device__ void gpunet_im2col(const T *x, int nb, int C, int H, int W, gpunet_taps t, T *cols) {
    const unsigned P = t.Ho * t.Wo, L = nb * P, KK = t.kh * t.kw;
    const unsigned total = C * KK * L, groups = (total + GPUNET_IM2COL_ILP - 1) / GPUNET_IM2COL_ILP;
    GPUNET_GRID_STRIDE(g, groups) {
        T v[GPUNET_IM2COL_ILP];
#pragma unroll
        for (int u = 0; u < GPUNET_IM2COL_ILP; ++u) {  // consecutive values: coalesced stores
            unsigned e = g + u * groups;
            v[u] = T(0);
            if (e >= total) continue;
            unsigned r = e / L, col = e - r * L;
            unsigned c = r / KK, pq = r - c * KK, p = pq / t.kw, q = pq - p * t.kw;
            unsigned m = col / P, pi = col - m * P, i = pi / t.Wo, j = pi - i * t.Wo;
            int h = int(i) * t.sh + int(p) - t.ph, w = int(j) * t.sw + int(q) - t.pw;
            if (h >= 0 && h < H && w >= 0 && w < W) v[u] = x[((size_t(m) * C + c) * H + h) * W + w];
        }
#pragma unroll
        for (int u = 0; u < GPUNET_IM2COL_ILP; ++u)
            if (g + u * groups < total) cols[g + u * groups] = v[u];
    }
}

// col2im keeps 3 registers per value: 6 values in 48 registers (5 blocks of 256 per SM, no stack
// frame) keep 5 x 256 x 24 B = 30 KB of gathers in flight per SM
#define GPUNET_COL2IM_ILP 6

template <typename T>
__device__ void gpunet_col2im(const T *dcols, int nb, int C, int H, int W, gpunet_taps t, T *dx) {
    const unsigned P = t.Ho * t.Wo, L = nb * P;
    const unsigned total = nb * C * H * W, groups = (total + GPUNET_COL2IM_ILP - 1) / GPUNET_COL2IM_ILP;
    GPUNET_GRID_STRIDE(g, groups) {
        // per value: its (h, w) packed in one int (h, w < 2^15: the host checks) and the offset of
        // its channel's first dcols row at its sample -- few registers, so that 4 values fit
        T acc[GPUNET_COL2IM_ILP];
        int hw[GPUNET_COL2IM_ILP];
        unsigned base[GPUNET_COL2IM_ILP];  // dcols (one chunk) holds < 2^31 values (conv.py)
#pragma unroll
        for (int u = 0; u < GPUNET_COL2IM_ILP; ++u) {
            unsigned e = g + u * groups;
            acc[u] = T(0), hw[u] = -1, base[u] = 0;  // hw < 0: past the end, no tap reads it
            if (e >= total) continue;
            unsigned row = e / W, w = e - row * W, plane = row / H, h = row - plane * H;
            unsigned m = plane / C, c = plane - m * C;
            hw[u] = int(h << 15 | w);
            base[u] = c * t.kh * t.kw * L + m * P;
        }
        for (int p = 0; p < t.kh; ++p)
            for (int q = 0; q < t.kw; ++q) {
                // the taps of GPUNET_COL2IM_ILP dx values at once: independent loads in flight
#pragma unroll
                for (int u = 0; u < GPUNET_COL2IM_ILP; ++u) {
                    if (hw[u] < 0) continue;
                    int hi = (hw[u] >> 15) + t.ph - p, wj = (hw[u] & 0x7fff) + t.pw - q;
                    if (hi < 0 || wj < 0 || hi % t.sh != 0 || wj % t.sw != 0) continue;
                    int i = hi / t.sh, j = wj / t.sw;  // the output (i, j) that read it at (p, q)
                    if (i >= t.Ho || j >= t.Wo) continue;
                    acc[u] += dcols[base[u] + unsigned(p * t.kw + q) * L + i * t.Wo + j];
                }
            }
#pragma unroll
        for (int u = 0; u < GPUNET_COL2IM_ILP; ++u)
            if (g + u * groups < total) dx[g + u * groups] = acc[u];
    }
}

template <typename T>
__device__ void gpunet_max_pool_fwd(const T *x, int planes, int H, int W, gpunet_taps t, T *out,
                                    int *arg) {
    const unsigned total = planes * t.Ho * t.Wo;
    const unsigned groups = (total + GPUNET_IM2COL_ILP - 1) / GPUNET_IM2COL_ILP;
    GPUNET_GRID_STRIDE(g, groups) {
        T best[GPUNET_IM2COL_ILP];
        int at[GPUNET_IM2COL_ILP], h0[GPUNET_IM2COL_ILP], w0[GPUNET_IM2COL_ILP];
        unsigned base[GPUNET_IM2COL_ILP];  // a launch covers < 2^31 input values (conv.py)
#pragma unroll
        for (int u = 0; u < GPUNET_IM2COL_ILP; ++u) {
            unsigned e = g + u * groups;
            best[u] = T(0), at[u] = -1, base[u] = 0;  // at < 0: no cell seen yet
            h0[u] = -(1 << 30), w0[u] = 0;             // past the end: no cell of its window is read
            if (e >= total) continue;
            unsigned row = e / t.Wo, j = e - row * t.Wo, plane = row / t.Ho, i = row - plane * t.Ho;
            base[u] = plane * H * W;
            h0[u] = int(i) * t.sh - t.ph, w0[u] = int(j) * t.sw - t.pw;
        }
        // the window in row-major order, GPUNET_IM2COL_ILP windows at once: the first NaN wins
        // (a NaN best is never replaced), else the first maximum (strict >); padding is skipped
        for (int p = 0; p < t.kh; ++p)
            for (int q = 0; q < t.kw; ++q) {
#pragma unroll
                for (int u = 0; u < GPUNET_IM2COL_ILP; ++u) {
                    int h = h0[u] + p, w = w0[u] + q;
                    if (h < 0 || h >= H || w < 0 || w >= W) continue;
                    T v = x[base[u] + h * W + w];
                    bool keep_nan = at[u] >= 0 && best[u] != best[u];
                    if (!keep_nan && (at[u] < 0 || v > best[u] || v != v)) best[u] = v, at[u] = h * W + w;
                }
            }
#pragma unroll
        for (int u = 0; u < GPUNET_IM2COL_ILP; ++u)
            if (g + u * groups < total) out[g + u * groups] = best[u], arg[g + u * groups] = at[u];
    }
}

template <typename T>
__device__ void gpunet_max_pool_bwd(const T *dout, const int *arg, int planes, int H, int W,
                                    gpunet_taps t, T *dx) {
    const unsigned total = planes * H * W;
    const unsigned groups = (total + GPUNET_IM2COL_ILP - 1) / GPUNET_IM2COL_ILP;
    // a cell lies in at most ceil(kh / sh) x ceil(kw / sw) windows: walk that box for all
    // GPUNET_IM2COL_ILP cells at once (independent loads in flight); per cell only its flat index
    // in the plane and its plane are kept (registers, not loads, are the limit here)
    const int span_i = (t.kh + t.sh - 1) / t.sh, span_j = (t.kw + t.sw - 1) / t.sw;
    GPUNET_GRID_STRIDE(g, groups) {
        T acc[GPUNET_IM2COL_ILP];
        int self[GPUNET_IM2COL_ILP];
        unsigned plane[GPUNET_IM2COL_ILP];
#pragma unroll
        for (int u = 0; u < GPUNET_IM2COL_ILP; ++u) {
            unsigned e = g + u * groups;
            acc[u] = T(0), self[u] = -1, plane[u] = 0;  // self < 0: past the end, no window
            if (e >= total) continue;
            plane[u] = e / (H * W);
            self[u] = int(e - plane[u] * (H * W));
        }
        for (int di = 0; di < span_i; ++di)
            for (int dj = 0; dj < span_j; ++dj) {
#pragma unroll
                for (int u = 0; u < GPUNET_IM2COL_ILP; ++u) {
                    if (self[u] < 0) continue;
                    int h = self[u] / W, w = self[u] - (self[u] / W) * W;
                    // the windows holding (h, w): i sh - ph <= h < i sh - ph + kh (same for j)
                    int a = h + t.ph - t.kh + 1, b = w + t.pw - t.kw + 1;
                    int i = (a > 0 ? (a + t.sh - 1) / t.sh : 0) + di;
                    int j = (b > 0 ? (b + t.sw - 1) / t.sw : 0) + dj;
                    if (i > (h + t.ph) / t.sh || i >= t.Ho || j > (w + t.pw) / t.sw || j >= t.Wo)
                        continue;
                    unsigned o = (plane[u] * t.Ho + i) * t.Wo + j;  // < the launch's values
                    if (arg[o] == self[u]) acc[u] += dout[o];
                }
            }
#pragma unroll
        for (int u = 0; u < GPUNET_IM2COL_ILP; ++u)
            if (g + u * groups < total) dx[g + u * groups] = acc[u];
    }
}

// Blocks of 256 threads, and how many must stay resident per SM (registers are capped to let
// them): float pooling 7 (4 gathers per thread in flight cover the memory latency, 25 KB per SM
// on an H200, tests/test_gpu_static.py), col2im 5 (6 gathers); the double kernels, whose values
// take two registers each, half that -- every one without a stack frame.
#define GPUNET_POOL_BOUNDS_float __launch_bounds__(256, 7)
#define GPUNET_COL2IM_BOUNDS_float __launch_bounds__(256, 5)
#define GPUNET_POOL_BOUNDS_double __launch_bounds__(256, 3)
#define GPUNET_COL2IM_BOUNDS_double __launch_bounds__(256, 2)

#define GPUNET_CONV_KERNELS(T, SUFFIX)                                                             \
    extern "C" __global__ void im2col_##SUFFIX(const T *x, int nb, int C, int H, int W,           \
                                               GPUNET_TAPS_PARAMS, T *cols) {                     \
        gpunet_im2col(x, nb, C, H, W, GPUNET_TAPS, cols);                                          \
    }                                                                                              \
    extern "C" __global__ void GPUNET_COL2IM_BOUNDS_##SUFFIX col2im_##SUFFIX(const T *dcols, int nb, int C, int H, int W,       \
                                               GPUNET_TAPS_PARAMS, T *dx) {                       \
        gpunet_col2im(dcols, nb, C, H, W, GPUNET_TAPS, dx);                                        \
    }                                                                                              \
    extern "C" __global__ void GPUNET_POOL_BOUNDS_##SUFFIX max_pool_fwd_##SUFFIX(const T *x, int planes, int H, int W,        \
                                                     GPUNET_TAPS_PARAMS, T *out, int *arg) {      \
        gpunet_max_pool_fwd(x, planes, H, W, GPUNET_TAPS, out, arg);                               \
    }                                                                                              \
    extern "C" __global__ void GPUNET_POOL_BOUNDS_##SUFFIX max_pool_bwd_##SUFFIX(const T *dout, const int *arg, int planes,   \
                                                     int H, int W, GPUNET_TAPS_PARAMS, T *dx) {   \
        gpunet_max_pool_bwd(dout, arg, planes, H, W, GPUNET_TAPS, dx);                             \
    }

GPUNET_CONV_KERNELS(float, float)
GPUNET_CONV_KERNELS(double, double)

#endif  // GPUNET_CONV_CUH
