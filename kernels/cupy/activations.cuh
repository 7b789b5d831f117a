// gpunet activation functions: the device math, shared by every CuPy kernel.
//
// Each activation NAME has
//   T gpunet_NAME_fwd(T x, T a, T b)            -> f(x)
//   T gpunet_NAME_bwd(T dy, T x, T a, T b)      -> dy * f'(x)   (recomputed from x: no saved output)
// with up to two scalar parameters a, b (unused ones are passed as 0). Definitions and constants are
// those of torch.nn.functional so results compare one to one. NaN in gives NaN out; +-inf give the
// mathematical limits. The NumPy reference of each formula is in gpunet/functional/activations.py.
//
// No #include (NVRTC has no host headers): the translation units of kernels/__init__.py put
// generated.cuh in front; the same text is compiled by NVRTC through CuPy and by nvcc in the tests.

#ifndef GPUNET_ACTIVATIONS_CUH
#define GPUNET_ACTIVATIONS_CUH

// A "kink" derivative: 1 where x > 0, `left` where x <= 0, NaN where x is NaN.
template <typename T> __device__ __forceinline__ T gpunet_kink(T x, T left) {
    return x > T(0) ? T(1) : (x <= T(0) ? left : x);
}

// sigmoid(x) = 1 / (1 + exp(-x)), evaluated so that exp never overflows: e = exp(-|x|) in (0, 1],
// r = 1 / (1 + e) is sigmoid(|x|), and sigmoid(-|x|) = e r. One exp and one division per value,
// no branch (a branch per value made the compiler keep both paths' exp and division).
template <typename T> __device__ __forceinline__ T gpunet_sigmoid_fwd(T x, T, T) {
    T e = exp(-fabs(x));
    T r = T(1) / (T(1) + e);
    return x >= T(0) ? r : e * r;                 // NaN: e * r is NaN
}
template <typename T> __device__ __forceinline__ T gpunet_sigmoid_bwd(T dy, T x, T a, T b) {
    T s = gpunet_sigmoid_fwd(x, a, b);
    return dy * s * (T(1) - s);
}

template <typename T> __device__ __forceinline__ T gpunet_tanh_fwd(T x, T, T) { return tanh(x); }
template <typename T> __device__ __forceinline__ T gpunet_tanh_bwd(T dy, T x, T, T) {
    T t = tanh(x);
    return dy * (T(1) - t * t);
}

// relu(x) = max(x, 0); written as a comparison that lets NaN through.
template <typename T> __device__ __forceinline__ T gpunet_relu_fwd(T x, T, T) { return x < T(0) ? T(0) : x; }
template <typename T> __device__ __forceinline__ T gpunet_relu_bwd(T dy, T x, T, T) {
    return dy * gpunet_kink(x, T(0));
}

// leaky_relu(x) = x if x > 0 else a * x   (a = negative_slope)
template <typename T> __device__ __forceinline__ T gpunet_leaky_relu_fwd(T x, T a, T) { return x > T(0) ? x : a * x; }
template <typename T> __device__ __forceinline__ T gpunet_leaky_relu_bwd(T dy, T x, T a, T) {
    return dy * gpunet_kink(x, a);
}

// elu(x) = x if x > 0 else a * (exp(x) - 1)   (a = alpha)
template <typename T> __device__ __forceinline__ T gpunet_elu_fwd(T x, T a, T) { return x > T(0) ? x : a * expm1(x); }
template <typename T> __device__ __forceinline__ T gpunet_elu_bwd(T dy, T x, T a, T) {
    return x > T(0) ? dy : (x <= T(0) ? dy * a * exp(x) : x);
}

// selu(x) = scale * elu(x, alpha) with the constants of Klambauer et al. 2017 (gpunet_selu_alpha() and
// gpunet_selu_scale() come from generated.cuh, written from kernels/activation_math.py's values).
template <typename T> __device__ __forceinline__ T gpunet_selu_fwd(T x, T, T) {
    return T(gpunet_selu_scale()) * gpunet_elu_fwd(x, T(gpunet_selu_alpha()), T(0));
}
template <typename T> __device__ __forceinline__ T gpunet_selu_bwd(T dy, T x, T, T) {
    return T(gpunet_selu_scale()) * gpunet_elu_bwd(dy, x, T(gpunet_selu_alpha()), T(0));
}

// gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2));   gelu'(x) = Phi(x) + x phi(x).
// +-inf are special-cased: x * Phi(x) is inf * 0 at -inf.
template <typename T> __device__ __forceinline__ T gpunet_gelu_fwd(T x, T, T) {
    if (isinf(x)) return x > T(0) ? x : T(0);
    return T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440)));
}
template <typename T> __device__ __forceinline__ T gpunet_gelu_bwd(T dy, T x, T, T) {
    if (isinf(x)) return x > T(0) ? dy : T(0);
    T cdf = T(0.5) * (T(1) + erf(x * T(0.70710678118654752440)));
    T pdf = T(0.39894228040143267794) * exp(T(-0.5) * x * x);
    return dy * (cdf + x * pdf);
}

// gelu(x, approximate="tanh") = 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2 / pi).
// Past |x| = 10 tanh is exactly +-1 in float32 and float64, so the limits are exact there (and x^3
// cannot overflow into inf * 0).
template <typename T> __device__ __forceinline__ T gpunet_gelu_tanh_fwd(T x, T, T) {
    if (fabs(x) > T(10)) return x > T(0) ? x : T(0);
    T inner = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
    return T(0.5) * x * (T(1) + tanh(inner));
}
template <typename T> __device__ __forceinline__ T gpunet_gelu_tanh_bwd(T dy, T x, T, T) {
    if (fabs(x) > T(10)) return x > T(0) ? dy : T(0);
    T x2 = x * x;
    T t = tanh(T(0.79788456080286535588) * (x + T(0.044715) * x2 * x));
    T dinner = T(0.79788456080286535588) * (T(1) + T(3) * T(0.044715) * x2);
    return dy * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dinner);
}

// softplus(x) = log(1 + exp(a x)) / a, and x itself once a x > b   (a = beta, b = threshold)
template <typename T> __device__ __forceinline__ T gpunet_softplus_fwd(T x, T a, T b) {
    T z = x * a;
    return z > b ? x : log1p(exp(z)) * (T(1) / a);  // 1 / a: one division per thread, not per value
}
template <typename T> __device__ __forceinline__ T gpunet_softplus_bwd(T dy, T x, T a, T b) {
    T z = x * a;
    if (z > b) return dy;
    T e = exp(z);
    return dy * e / (e + T(1));
}

// silu(x) = x * sigmoid(x);  silu'(x) = s (1 + x (1 - s)).  +-inf special-cased (inf * 0).
template <typename T> __device__ __forceinline__ T gpunet_silu_fwd(T x, T a, T b) {
    if (isinf(x)) return x > T(0) ? x : T(0);
    return x * gpunet_sigmoid_fwd(x, a, b);
}
template <typename T> __device__ __forceinline__ T gpunet_silu_bwd(T dy, T x, T a, T b) {
    if (isinf(x)) return x > T(0) ? dy : T(0);
    T s = gpunet_sigmoid_fwd(x, a, b);
    return dy * s * (T(1) + x * (T(1) - s));
}

#endif  // GPUNET_ACTIVATIONS_CUH
