"""python -m gpunet.bench {vs-torch,activations,batchnorm,step,conv,optim,startup,gpu-static}
[options]: print benchmark tables. ``vs-torch`` (and ``conv``) measure the CPU against PyTorch
with each side in its own process, as a user's machine runs them; the others run in this
process, every kernel path side by side (and on a GPU)."""

from __future__ import annotations

import argparse
import sys

import gpunet
from gpunet.cli import _positive_list


def _threads(s: str) -> list:
    """``1,2`` -> [1, 2]: thread counts, each at most the logical cores here."""
    import os

    counts = _positive_list(s, "thread counts", "1,2")
    if max(counts) > (os.cpu_count() or 1):
        raise argparse.ArgumentTypeError(
            f"thread counts must be at most the {os.cpu_count()} logical cores here, got {s!r}"
        )
    return counts


def _groups(s: str) -> list:
    from .vs_torch import GROUPS

    groups = s.split(",")
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"groups must be among {', '.join(GROUPS)}; got {', '.join(unknown)}"
        )
    return groups


def _rounds(s: str) -> int:
    if not s.isdigit() or int(s) < 1:
        raise argparse.ArgumentTypeError(f"rounds must be a positive integer, got {s!r}")
    return int(s)


def _match(s: str) -> list:
    words = [w.strip() for w in s.split(",")]
    if not all(words):
        raise argparse.ArgumentTypeError(
            f"match must be comma-separated non-empty words, got {s!r}"
        )
    return words


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpunet.bench", description=__doc__)
    parser.add_argument("--backend", default="auto", choices=["auto", "numpy", "cupy"])
    sub = parser.add_subparsers(dest="which", required=True)
    act = sub.add_parser("activations", help="activation functions, every path, vs the copy roof")
    act.add_argument(
        "--max-mib",
        type=int,
        default=None,
        help="largest tensor in MiB (default: 256 on a GPU, 16 on a CPU)",
    )
    act.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    act.add_argument("--functions", default=None, help="comma-separated subset, e.g. relu,gelu")
    act.add_argument("--repeat", type=int, default=30)
    act.add_argument(
        "--save-table",
        action="store_true",
        help="GPU: write the measured size -> faster path table that set_kernels('auto') follows",
    )
    bn = sub.add_parser("batchnorm", help="fused BatchNorm vs the bandwidth floor and torch")
    bn.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    bn.add_argument(
        "--shapes", default=None, help="e.g. 4096x4096,64x256x32x32 (default: the issue's list)"
    )
    bn.add_argument("--repeat", type=int, default=30)
    su = sub.add_parser("startup", help="import, first step cold and warm, the plot, gpunet train")
    su.add_argument("--repeat", type=int, default=3)
    st = sub.add_parser("step", help="a whole MLP training step vs torch eager")
    st.add_argument("--configs", default=None, help="batch x inputs x hidden, e.g. 256x3072x1024")
    st.add_argument(
        "--no-batchnorm", action="store_true", help="Linear -> ReLU layers, no BatchNorm"
    )
    st.add_argument(
        "--sweep",
        action="store_true",
        help="batch 64..4096 at 3072->1024, then width 256..2048 at batch 256 (issue #13's sweep)",
    )
    st.add_argument("--repeat", type=int, default=30)
    cv = sub.add_parser(
        "conv",
        help="CPU: convnet steps, Conv2d and MaxPool2d layers vs torch, each in its own process",
    )
    cv.add_argument("--threads", type=_threads, default=[1, 2], help="comma-separated counts")
    cv.add_argument("--rounds", type=_rounds, default=3, help="alternated processes per side")
    cv.add_argument("--repeat", type=int, default=20)
    cv.add_argument("--torch-python", default=None, help="an interpreter with torch (a venv)")
    cv.add_argument("--quick", action="store_true", help="two layer shapes instead of five")
    cv.add_argument("--match", type=_match, default=None, help="only cases whose name has these")
    vt = sub.add_parser(
        "vs-torch",
        help="CPU: MLP steps, BatchNorm, activations, optimizers, convnets vs torch, each side "
        "in its own process",
    )
    vt.add_argument(
        "--groups", type=_groups, default="mlp,bn,act,optim,conv", help="comma-separated groups"
    )
    vt.add_argument("--threads", type=_threads, default=[1, 2], help="comma-separated counts")
    vt.add_argument("--rounds", type=_rounds, default=3, help="alternated processes per side")
    vt.add_argument("--repeat", type=int, default=20)
    vt.add_argument("--torch-python", default=None, help="an interpreter with torch (a venv)")
    vt.add_argument("--quick", action="store_true", help="conv: two layer shapes instead of five")
    vt.add_argument(
        "--match",
        type=_match,
        default=None,
        help="only the cases whose name contains one of these comma-separated words, "
        "e.g. 'tanh,gelu 4096K fwd'",
    )
    op = sub.add_parser("optim", help="one optimizer update over an MLP's parameters vs torch")
    op.add_argument("--nets", default=None, help="inputs x hidden, e.g. 3072x1024,784x512")
    op.add_argument("--optimizers", default="sgd,adam", help="comma-separated: sgd, adam")
    op.add_argument("--repeat", type=int, default=30)
    gs = sub.add_parser(
        "gpu-static",
        help="no GPU needed: registers, occupancy, load widths of the CUDA kernels, and an "
        "ESTIMATE of BatchNorm's time on an H200",
    )
    gs.add_argument("--arch", default="sm_90", choices=["sm_80", "sm_90"])
    args = parser.parse_args(argv)
    if args.which == "gpu-static":
        from . import gpu_static

        return gpu_static.main(args.arch)
    if args.which in ("conv", "vs-torch"):
        from . import vs_torch

        groups = ["conv"] if args.which == "conv" else args.groups
        tpy = args.torch_python
        try:
            table = vs_torch.run(
                groups, args.threads, args.rounds, args.repeat, tpy, args.quick, args.match
            )
        except vs_torch.NoCases as exc:
            parser.error(str(exc))
        print(table)
        return 0
    backend = gpunet.set_backend(args.backend)
    cpu = ""
    if backend == "numpy":
        from gpunet.kernels.shared import cpu_blas

        cpu = f"  cpu_blas={cpu_blas.active()}  cpu_kernels={gpunet.get_cpu_kernels()}"
    print(f"# gpunet.bench {args.which}  backend={backend}  device={gpunet.device_name()}{cpu}")
    if args.which == "activations":
        from . import activations

        max_mib = args.max_mib or (256 if backend == "cupy" else 16)
        funcs = args.functions.split(",") if args.functions else None
        print(
            activations.run(
                max_mib=max_mib,
                dtype=args.dtype,
                functions=funcs,
                repeat=args.repeat,
                save_table=args.save_table,
            )
        )
    elif args.which == "startup":
        from . import startup

        print(startup.run(repeat=args.repeat))
    elif args.which == "optim":
        from . import optim

        names = args.optimizers.split(",")
        print(optim.run(nets=_shapes(args.nets), optimizers=names, repeat=args.repeat))
    elif args.which == "batchnorm":
        from . import batchnorm

        print(batchnorm.run(dtype=args.dtype, shapes=_shapes(args.shapes), repeat=args.repeat))
    else:
        from . import step

        configs = step.SWEEP if args.sweep else _shapes(args.configs)
        print(step.run(configs=configs, repeat=args.repeat, batchnorm=not args.no_batchnorm))
    return 0


def _shapes(text: str) -> list | None:
    if not text:
        return None
    return [tuple(int(v) for v in s.split("x")) for s in text.split(",")]


if __name__ == "__main__":
    sys.exit(main())
