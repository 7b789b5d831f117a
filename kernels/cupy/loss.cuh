// Softmax cross-entropy, forward and backward in one pass per row (gpunet/functional/loss.py states
// the math): L_i = log(sum_j exp(s_ij - m_i)) - (s_iy - m_i), m_i = max_j s_ij;
// dscores_ij = (softmax_ij - [j == y_i]) / N. 32 threads per row, 8 rows per block (grid-stride
// over row groups); the sum of exponentials in double. A NaN score makes the row's loss NaN (so divergence is seen).
// Replaces ~14 small CuPy launches per training step with one (+ the mean of the row losses).

#ifndef GPUNET_LOSS_CUH
#define GPUNET_LOSS_CUH

// A row per 32 threads (one warp's worth; blockDim = (32, GPUNET_LOSS_ROWS)): at 10 classes
// a 128-thread block per row left 92 % of its threads idle. Reductions over a row's 32 threads
// in shared memory (the rows of a block reduce side by side, one __syncthreads per step).
#define GPUNET_LOSS_LANES 32
#define GPUNET_LOSS_ROWS 8

// max (NaN wins, so that it propagates) or sum over the 32 lanes of row slot ty
__device__ __forceinline__ double gpunet_row_reduce(double (*red)[GPUNET_LOSS_LANES], double v,
                                                     bool is_max) {
    const int t = threadIdx.x, ty = threadIdx.y;
    red[ty][t] = v;
    __syncthreads();
    for (int stride = GPUNET_LOSS_LANES / 2; stride > 0; stride >>= 1) {
        if (t < stride) {
            double o = red[ty][t + stride];
            if (!is_max) red[ty][t] += o;
            else if (o > red[ty][t] || isnan(o)) red[ty][t] = o;
        }
        __syncthreads();
    }
    double r = red[ty][0];
    __syncthreads();
    return r;
}

template <typename T>
__device__ void gpunet_softmax_xent(const T *scores, const long long *y, T *dscores, T *row_loss,
                                    long long N, long long C) {
    __shared__ double red[GPUNET_LOSS_ROWS][GPUNET_LOSS_LANES];
    const int t = threadIdx.x;
    const double inv_n = 1.0 / double(N);
    // every row group of the grid-stride loop is entered by the whole block (the reductions'
    // barriers): rows past N compute nothing and write nothing
    for (long long base = (long long)blockIdx.x * GPUNET_LOSS_ROWS; base < N;
         base += (long long)gridDim.x * GPUNET_LOSS_ROWS) {
        long long row = base + threadIdx.y;
        bool live = row < N;
        const T *s = scores + (live ? row : 0) * C;
        double m = __longlong_as_double(0xfff0000000000000LL);   // -inf (NVRTC has no INFINITY)
        if (live)
            for (long long c = t; c < C; c += GPUNET_LOSS_LANES) {
                double v = double(s[c]);
                if (v > m || isnan(v)) m = v;
            }
        m = gpunet_row_reduce(red, m, true);
        double se = 0.0;
        if (live)
            for (long long c = t; c < C; c += GPUNET_LOSS_LANES) se += exp(double(s[c]) - m);
        se = gpunet_row_reduce(red, se, false);
        if (!live) continue;
        T *ds = dscores + row * C;
        long long label = y[row];
        for (long long c = t; c < C; c += GPUNET_LOSS_LANES) {
            double p = exp(double(s[c]) - m) / se;
            ds[c] = T((p - (c == label ? 1.0 : 0.0)) * inv_n);
        }
        if (t == 0) row_loss[row] = T(log(se) - (double(s[label]) - m));
    }
}

extern "C" __global__ void softmax_xent_float(const float *scores, const long long *y, float *dscores,
                                              float *row_loss, long long N, long long C) {
    gpunet_softmax_xent(scores, y, dscores, row_loss, N, C);
}
extern "C" __global__ void softmax_xent_double(const double *scores, const long long *y, double *dscores,
                                               double *row_loss, long long N, long long C) {
    gpunet_softmax_xent(scores, y, dscores, row_loss, N, C);
}

#endif  // GPUNET_LOSS_CUH
