// Optimizer updates, one fused elementwise pass per parameter (instead of 5-12 small CuPy ops):
// the update rules of gpunet/optim.py, which states them (and checks them against PyTorch).
// CuPy calls these from ElementwiseKernels (kernels/cupy_optim.py); the instantiations at the
// bottom only let nvcc type-check the templates in the tests.

#ifndef GPUNET_OPTIM_CUH
#define GPUNET_OPTIM_CUH

// SGD: d = g + wd p; with momentum: buf = d (first step) or mu buf + (1 - damp) d,
// d = d + mu buf (nesterov) or buf;  p -= lr d.
template <typename T>
__device__ __forceinline__ void gpunet_sgd_update(T g, T &p, T &buf, double lr, double mu, double damp,
                                                  double wd, int nesterov, int first) {
    T d = g;
    if (wd != 0.0) d = d + T(wd) * p;
    if (mu != 0.0) {
        buf = first ? d : T(mu) * buf + T(1.0 - damp) * d;
        d = nesterov ? d + T(mu) * buf : buf;
    }
    p = p - T(lr) * d;
}

// SGD without momentum: p -= lr (g + wd p).
template <typename T>
__device__ __forceinline__ void gpunet_sgd_plain_update(T g, T &p, double lr, double wd) {
    T unused = T(0);
    gpunet_sgd_update(g, p, unused, lr, 0.0, 0.0, wd, 0, 0);
}

// Adam (decoupled = 0) / AdamW (decoupled = 1); bc1 = 1 - b1^t, bc2 = 1 - b2^t.
template <typename T>
__device__ __forceinline__ void gpunet_adam_update(T g, T &p, T &m, T &v, double lr, double b1, double b2,
                                                   double eps, double wd, double bc1, double bc2,
                                                   int decoupled) {
    if (wd != 0.0) {
        if (decoupled) p = p * T(1.0 - lr * wd);
        else g = g + T(wd) * p;
    }
    m = T(b1) * m + T(1.0 - b1) * g;
    v = T(b2) * v + T(1.0 - b2) * g * g;
    T denom = sqrt(v) / T(sqrt(bc2)) + T(eps);
    p = p - T(lr / bc1) * m / denom;
}

#ifdef GPUNET_INSTANTIATE_FOR_TESTS
extern "C" __global__ void gpunet_optim_check(float *pf, double *pd) {
    float bf = 0.f, mf = 0.f, vf = 0.f;
    double bd = 0.0, md = 0.0, vd = 0.0;
    gpunet_sgd_update(1.0f, pf[0], bf, 0.1, 0.9, 0.0, 0.0, 1, 0);
    gpunet_sgd_update(1.0, pd[0], bd, 0.1, 0.9, 0.0, 0.0, 1, 0);
    gpunet_sgd_plain_update(1.0f, pf[2], 0.1, 0.01);
    gpunet_sgd_plain_update(1.0, pd[2], 0.1, 0.01);
    gpunet_adam_update(1.0f, pf[1], mf, vf, 1e-3, 0.9, 0.999, 1e-8, 0.0, 0.1, 0.001, 0);
    gpunet_adam_update(1.0, pd[1], md, vd, 1e-3, 0.9, 0.999, 1e-8, 0.0, 0.1, 0.001, 1);
}
#endif

#endif  // GPUNET_OPTIM_CUH
