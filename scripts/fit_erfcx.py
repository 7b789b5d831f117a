"""Fit the polynomial of kernels/vector_math.py's float32 erfc: R(z) = erfc(z) exp(z^2) (the scaled
complementary error function, scipy.special.erfcx) on 0 <= z <= ERFCX_HI, in t = 2 z / ERFCX_HI - 1.

A least-squares Chebyshev fit of relative error, reweighted a few times toward the minimax
(Lawson's iteration), converted to monomials in t (well conditioned on [-1, 1]). Prints the
coefficients, highest power first, and the relative error of a float32 Horner evaluation.

    python scripts/fit_erfcx.py [degree] [hi]
"""

import sys

import numpy
import scipy.special
from numpy.polynomial import chebyshev


def fit(degree: int = 18, hi: float = 6.0) -> tuple:
    z = numpy.linspace(0.0, hi, 400001)
    r = scipy.special.erfcx(z)
    t = 2 * z / hi - 1
    w = 1 / r
    c = chebyshev.chebfit(t, r, degree, w=w)
    for _ in range(8):
        err = (chebyshev.chebval(t, c) - r) / r
        w = w * (1 + 50 * numpy.abs(err) / numpy.abs(err).max())
        c = chebyshev.chebfit(t, r, degree, w=w)
    return tuple(chebyshev.cheb2poly(c)[::-1]), z, r


def main() -> None:
    degree = int(sys.argv[1]) if len(sys.argv) > 1 else 18
    hi = float(sys.argv[2]) if len(sys.argv) > 2 else 6.0
    coefs, z, r = fit(degree, hi)
    z32 = z.astype(numpy.float32)
    t32 = z32 * numpy.float32(2 / hi) - numpy.float32(1)
    acc = numpy.float32(coefs[0])
    for c in coefs[1:]:
        acc = (acc * t32 + numpy.float32(c)).astype(numpy.float32)
    ref = scipy.special.erfcx(z32.astype(numpy.float64))
    print(
        f"# degree {degree} on [0, {hi}]: float32 Horner relative error "
        f"{numpy.max(numpy.abs(acc - ref) / ref):.2e}"
    )
    print("ERFCX_P = (")
    for c in coefs:
        print(f"    {float(c)!r},")
    print(")")


if __name__ == "__main__":
    main()
