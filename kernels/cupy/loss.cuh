// Softmax cross-entropy, forward and backward in one pass per row (gpunet/functional/loss.py states
// the math): L_i = log(sum_j exp(s_ij - m_i)) - (s_iy - m_i), m_i = max_j s_ij;
// dscores_ij = (softmax_ij - [j == y_i]) / N. One block per row (grid-stride over rows); the sum
// of exponentials in double. A NaN score makes the row's loss NaN (so divergence is seen).
// Replaces ~14 small CuPy launches per training step with one (+ the mean of the row losses).

#ifndef GPUNET_LOSS_CUH
#define GPUNET_LOSS_CUH

#define GPUNET_LOSS_THREADS 128

template <typename T>
__device__ void gpunet_softmax_xent(const T *scores, const long long *y, T *dscores, T *row_loss,
                                    long long N, long long C) {
    __shared__ double red[GPUNET_LOSS_THREADS];
    const int t = threadIdx.x;
    for (long long row = blockIdx.x; row < N; row += gridDim.x) {
        const T *s = scores + row * C;
        T *ds = dscores + row * C;
        // row maximum (NaN wins, so that it propagates)
        double m = __longlong_as_double(0xfff0000000000000LL);   // -inf (NVRTC has no INFINITY)
        for (long long c = t; c < C; c += blockDim.x) {
            double v = double(s[c]);
            if (v > m || isnan(v)) m = v;
        }
        red[t] = m;
        __syncthreads();
        for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
            if (t < stride) {
                double o = red[t + stride];
                if (o > red[t] || isnan(o)) red[t] = o;
            }
            __syncthreads();
        }
        m = red[0];
        __syncthreads();
        // sum of exponentials
        double se = 0.0;
        for (long long c = t; c < C; c += blockDim.x) se += exp(double(s[c]) - m);
        red[t] = se;
        __syncthreads();
        for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
            if (t < stride) red[t] += red[t + stride];
            __syncthreads();
        }
        se = red[0];
        __syncthreads();
        long long label = y[row];
        double inv_n = 1.0 / double(N);
        for (long long c = t; c < C; c += blockDim.x) {
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
