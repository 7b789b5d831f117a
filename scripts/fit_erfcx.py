"""Fit the rational function of kernels/numba_cpu/vector_math.py's float32 erfc:
R(z) = erfc(z) exp(z^2)
(the scaled complementary error function, scipy.special.erfcx) ~ P(z) / Q(z) on 0 <= z <= 10,
P of degree 4 and Q of degree 5 (so that R ~ 1 / (sqrt(pi) z) far out, as erfcx does), Q(0) = 1.

Sanathanan-Koerner iteration: each round a linear least-squares fit of P - R Q weighted by
1 / (R Q_previous), i.e. of the relative error of P / Q. Prints the coefficients (constant term
first) and the relative error of a float32 Horner evaluation.

    python scripts/fit_erfcx.py
"""

import numpy
import scipy.special

N_P, N_Q, Z_MAX = 4, 5, 10.0


def fit(rounds: int = 30) -> tuple:
    z = numpy.linspace(0.0, Z_MAX, 200001)
    r = scipy.special.erfcx(z)
    q_prev = numpy.ones_like(z)
    columns = [z**k for k in range(N_P + 1)] + [-r * z**k for k in range(1, N_Q + 1)]
    a = numpy.stack(columns, axis=1)
    for _ in range(rounds):
        w = 1 / (r * numpy.abs(q_prev))
        sol, *_ = numpy.linalg.lstsq(a * w[:, None], r * w, rcond=None)
        p, q = sol[: N_P + 1], numpy.concatenate([[1.0], sol[N_P + 1 :]])
        q_prev = numpy.polynomial.polynomial.polyval(z, q)
    return p, q


def horner32(coefs, z):
    acc = numpy.float32(coefs[-1])
    for c in coefs[-2::-1]:
        acc = (acc * z + numpy.float32(c)).astype(numpy.float32)
    return acc


def main() -> None:
    p, q = fit()
    z = numpy.linspace(0.0, Z_MAX, 200001).astype(numpy.float32)
    got = (horner32(p, z) / horner32(q, z)).astype(numpy.float64)
    want = scipy.special.erfcx(z.astype(numpy.float64))
    print(
        f"# float32 relative error on [0, {Z_MAX}]: {numpy.max(numpy.abs(got - want) / want):.2e}"
    )
    print("ERFCX_P =", tuple(float(c) for c in p))
    print("ERFCX_Q =", tuple(float(c) for c in q))


if __name__ == "__main__":
    main()
