"""Centered finite differences for modules, float64: the gradient check of the lecture."""

import numpy


def module_gradients(module, x, dout, h=1e-6):
    """Numerical d(sum(dout * module(x)))/d(x) and /d(each parameter), in float64."""

    def loss():
        return float((module.forward(x) * dout).sum())

    def numeric(arr):
        g = numpy.zeros_like(arr)
        for i in numpy.ndindex(*arr.shape):
            old = arr[i]
            arr[i] = old + h
            lp = loss()
            arr[i] = old - h
            lm = loss()
            arr[i] = old
            g[i] = (lp - lm) / (2 * h)
        return g

    return numeric(x), {name: numeric(p.data) for name, p in module.named_parameters()}


def check_module(module, x, seed=0, rtol=1e-5, atol=1e-7):
    """Analytic backward vs finite differences, for the input and every parameter."""
    out = module.forward(x)
    dout = numpy.random.default_rng(seed).normal(size=out.shape)
    module.zero_grad()
    module.forward(x)
    dx = module.backward(dout)
    analytic = {name: p.grad for name, p in module.named_parameters()}
    ndx, nparams = module_gradients(module, x, dout)
    numpy.testing.assert_allclose(dx, ndx, rtol=rtol, atol=atol, err_msg="input gradient")
    for name, g in nparams.items():
        numpy.testing.assert_allclose(
            analytic[name], g, rtol=rtol, atol=atol, err_msg=f"gradient of {name}"
        )
