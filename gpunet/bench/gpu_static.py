"""``python -m gpunet.bench gpu-static``: what the CuPy path's kernels are on an H100/H200 and an
A100, read from the code NVRTC compiles with CuPy's options, without a GPU -- and an **estimate**
(never a measurement) of BatchNorm's time on an H200 from it.

Per kernel: registers, stack and spill bytes, resident blocks per SM (the occupancy rules),
16-byte loads, whether a loop calls the 64-bit integer division routine, the bytes each thread
keeps in flight and the bandwidth that allows (Little's law), and the bytes moved per element.

The model (an estimate): a kernel moves its bytes at min(copy rate, in-flight bytes on the chip /
DRAM latency), plus a fixed cost per launch. Copy rate 4.09 TB/s (measured on an H200,
docs/gpu-notes.md). Latency 0.82 us: what makes the model give the 2.63 TB/s measured there for a
scalar one-element-per-thread RawKernel (4 bytes in flight per thread, 2048 threads per SM).
Launch: 3 us of device time per kernel, back to back. The time of the last-block merge and of
the shared-memory trees is left out (a few us). So the table says whether a kernel *can* run at
the copy rate, not that it does: only ``scripts/gpu_check.sh`` on a lent GPU measures that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import cuda_tools

COPY_RATE = 4.09e12  # bytes/s, H200 device-to-device copy (docs/gpu-notes.md)
#: per architecture: (copy rate, SMs) of the part the in-flight check is made for -- the H200's
#: measured; the A100 80GB's is its nominal 2.0 TB/s less the ~15 % a copy loses (not measured)
PARTS = {"sm_90": (COPY_RATE, 132), "sm_80": (1.7e12, 108)}
LATENCY = 0.82e-6  # s, calibrated on the measured scalar RawKernel (see the module docstring)
LAUNCH = 3e-6  # s of device time per kernel launch
#: thread-instructions per second on an H200: 132 SMs x 4 schedulers x 32 lanes x 1.755 GHz
#: (sustained clock under load; FP64 instructions count twice, at half the FP32 issue rate)
ISSUE_RATE = 132 * 4 * 32 * 1.755e9
#: torch/cuDNN BatchNorm fwd+bwd measured on an H200 (docs/gpu-notes.md), microseconds
TORCH_BN_US = {(4096, 4096): 279.0, (64, 256, 32, 32): 279.0, (128, 64, 56, 56): 933.0}
TARGET = 1.5  # gpunet must be this much faster


@dataclass(frozen=True)
class KernelSpec:
    """How a kernel is launched and what one thread keeps in flight on its main path."""

    threads: int  # per block
    inflight: int  # bytes of global loads in flight per thread
    reads: int  # bytes read per element (float32)
    writes: int  # bytes written per element (float32)
    arrays: int = 1  # arrays read in the main loop (x; or x and dy)
    loop: bool = True  # False: one 16-byte vector per thread, no loop (elementwise kernels)


#: the float32 BatchNorm kernels on the paths the benchmark shapes take (rows: S = 1 and C % 4 == 0,
#: spatial: S % 4 == 0; both with 16-byte loads), the optimizer, and the activations below
SPECS = {
    "bn_stats_rows_float": KernelSpec(256, 4 * 16, 4, 0),
    "bn_stats_spatial_float": KernelSpec(256, 2 * 16, 4, 0),
    "bn_apply_float": KernelSpec(256, 16, 4, 4, loop=False),
    "bn_bwd_reduce_rows_float": KernelSpec(256, 2 * 32, 8, 0, arrays=2),
    "bn_bwd_reduce_spatial_float": KernelSpec(256, 2 * 32, 8, 0, arrays=2),
    "bn_bwd_dx_float": KernelSpec(256, 32, 8, 4, arrays=2, loop=False),
    "relu_fwd_float": KernelSpec(256, 16, 4, 4, loop=False),
    "relu_bwd_float": KernelSpec(256, 32, 8, 4, arrays=2, loop=False),
    # one launch for every parameter: SGD with momentum (g, p, buf in; p, buf out), Adam
    "sgd_multi_float": KernelSpec(256, 3 * 16, 12, 8, arrays=3, loop=False),
    "adam_multi_float": KernelSpec(256, 4 * 16, 16, 12, arrays=4, loop=False),
    # convolution (conv.cuh), per value written, 3x3 taps, 2x2 pooling, 4 values per thread (4
    # independent loads in flight; col2im 6): im2col reads one input value (the kh kw re-reads
    # of a value hit L1/L2) and writes one column entry; col2im gathers kh kw entries per dx
    # value; max pool forward reads its 4 window values and writes the maximum and its int32
    # index; backward reads the index of its one window (and the dout where it matches)
    "im2col_float": KernelSpec(256, 4 * 4, 4, 4),
    "col2im_float": KernelSpec(256, 6 * 4, 9 * 4, 4),
    "max_pool_fwd_float": KernelSpec(256, 4 * 4, 16, 8),
    "max_pool_bwd_float": KernelSpec(256, 4 * 4, 8, 4, arrays=2),
}
UNITS = {"batchnorm": "bn_", "activations": "", "optim": "", "conv": ""}


def _activation_specs() -> dict:
    """Every float32 activation's vector kernels (16 bytes per thread, no loop); PReLU and
    Maxout gather per channel / per group and are not vector kernels."""
    from gpunet.kernels.activation_table import ACTIVATIONS

    specs = {}
    for a in ACTIVATIONS:
        specs[f"{a.name}_fwd_float"] = KernelSpec(256, 16, 4, 4, loop=False)
        specs[f"{a.name}_bwd_float"] = KernelSpec(256, 32, 8, 4, arrays=2, loop=False)
    return specs


SPECS = {**_activation_specs(), **SPECS}


def instructions(text: str) -> list:
    """(address, instruction) pairs of a kernel's SASS."""
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            out.append((int(m.group(1), 16), m.group(2)))
    return out


def loops(ins: list) -> list:
    """(start, end) address ranges closed by a conditional backward branch (a rotated loop's
    back edge; an unconditional jump back is a join after a switch case, not a loop)."""
    found = []
    for addr, text in ins:
        m = re.search(r"^@!?U?P\d+ BRA\b.*?(0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) <= addr:
            found.append((int(m.group(1), 16), addr))
    return found


def int64_division_calls_in_loops(text: str) -> list:
    """Addresses of calls, inside a loop, to the 64-bit integer division routine (the one whose
    body converts with I2F.U64.RP)."""
    ins = instructions(text)
    targets = {int(t, 16) for _, x in ins for t in re.findall(r"CALL\.REL\.NOINC (0x[0-9a-f]+)", x)}
    division = set()
    for target in targets:
        for addr, x in ins:
            if addr < target:
                continue
            if "I2F.U64.RP" in x:
                division.add(target)
                break
            if x.split()[-1:] == ["RET"] or x.startswith("RET"):
                break
    spans = loops(ins)
    return [
        addr
        for addr, x in ins
        for t in re.findall(r"CALL\.REL\.NOINC (0x[0-9a-f]+)", x)
        if int(t, 16) in division and any(a <= addr <= b for a, b in spans)
    ]


def wide_accesses(text: str) -> dict:
    """Counts of 16-byte global loads and stores."""
    return {
        "LDG.128": len(re.findall(r"\bLDG\.E(\.\w+)*\.128\b", text)),
        "STG.128": len(re.findall(r"\bSTG\.E(\.\w+)*\.128\b", text)),
    }


def main_loop_cost(text: str, arrays: int = 1, float_lanes: int = 4) -> tuple:
    """(issue slots per element, elements per iteration) of the loop that loads the most: its
    instructions, FP64 ones counted twice (half rate), over the elements its loads bring in
    (0, 0 without a loop: one vector per thread, the cost is its few instructions)."""
    ins = instructions(text)
    best = None
    for a, b in loops(ins):
        body = [x for addr, x in ins if a <= addr <= b]
        loads = [x for x in body if re.search(r"\bLDG\.E", x)]
        if not loads:
            continue
        lanes = sum(float_lanes if ".128" in x else 2 if ".64" in x else 1 for x in loads)
        elements = lanes / arrays
        slots = sum(
            2 if re.search(r"\b(@\S+ )?D(ADD|MUL|FMA|SETP)|F2F\.F64", x) else 1 for x in body
        )
        if best is None or len(loads) > best[2]:
            best = (slots / elements, elements, len(loads))
    return (best[0], best[1]) if best else (0.0, 0)


PROLOGUE = 24  # issue slots before a vector kernel's first load: its index, bounds and pointers


def _slots(x: str) -> int:
    return 2 if re.search(r"\b(@\S+ )?D(ADD|MUL|FMA|SETP)|F2F\.F64", x) else 1


def vector_path_cost(text: str) -> float:
    """Issue slots of one thread of a vector kernel (one 16-byte group, no loop): from the first
    16-byte load of a group to its 16-byte store, straight through, plus PROLOGUE; the cheapest
    such path where the kernel has several (one per fused activation: BatchNorm without one)."""
    ins = [x for _, x in instructions(text)]
    costs, start = [], None
    for i, x in enumerate(ins):
        if re.search(r"\bLDG\.E(\.\w+)*\.128\b", x) and start is None:
            start = i
        elif re.search(r"\bSTG\.E(\.\w+)*\.128\b", x) and start is not None:
            costs.append(PROLOGUE + sum(_slots(y) for y in ins[start : i + 1]))
            start = None
    return float(min(costs)) if costs else float("nan")


@dataclass
class KernelReport:
    name: str
    resources: cuda_tools.Resources
    blocks_per_sm: int
    wide: dict
    int64_div_in_loops: int
    slots_per_element: float
    spec: KernelSpec | None

    def bandwidth(self, sms: int = 132) -> float:
        """The model's bandwidth (bytes moved per second) of this kernel on an H200."""
        if self.spec is None:
            return float("nan")
        s = self.spec
        threads = self.blocks_per_sm * s.threads * sms
        moved_per_read = (s.reads + s.writes) / s.reads
        return min(COPY_RATE, threads * s.inflight * moved_per_read / LATENCY)

    def copy_fraction(self) -> float:
        """The model's rate of this kernel (bytes moved, no launch cost) over the copy rate."""
        s = self.spec
        assert s is not None
        per_byte = max(
            1 / self.bandwidth(), self.slots_per_element / ISSUE_RATE / (s.reads + s.writes)
        )
        return 1 / per_byte / COPY_RATE

    def seconds(self, elements: int, sms: int = 132) -> float:
        """The model's time for ``elements`` elements: the slower of moving the bytes and
        issuing the main loop's instructions, plus a launch."""
        s = self.spec
        assert s is not None
        memory = elements * (s.reads + s.writes) / self.bandwidth(sms)
        issue = elements * self.slots_per_element / ISSUE_RATE
        return max(memory, issue) + LAUNCH


def analyse(arch: str = "sm_90") -> dict:
    """kernel name -> KernelReport, for the BatchNorm and activation units."""
    from gpunet.kernels.cupy.sources import unit_source

    out = {}
    for unit, prefix in UNITS.items():
        cubin = cuda_tools.compile_cubin(unit_source(unit), arch)
        usage, code = cuda_tools.resource_usage(cubin), cuda_tools.sass(cubin)
        for name, res in usage.items():
            if not name.startswith(prefix):
                continue
            spec = SPECS.get(name)
            threads = spec.threads if spec else 256
            out[name] = KernelReport(
                name,
                res,
                cuda_tools.occupancy(res, threads, arch),
                wide_accesses(code[name]),
                len(int64_division_calls_in_loops(code[name])),
                (
                    main_loop_cost(code[name], spec.arrays)[0]
                    if spec.loop
                    else vector_path_cost(code[name]) / 4  # one 4-value vector per thread
                )
                if spec
                else 0.0,
                spec,
            )
    return out


def batchnorm_estimate(reports: dict, shape: tuple) -> dict:
    """Estimated H200 time (us) of BatchNorm fwd+bwd in training, float32: the four kernels'
    bytes at their model bandwidth plus a launch each (an estimate, see the module docstring)."""
    n = 1
    for d in shape:
        n *= d
    kind = "rows" if len(shape) == 2 else "spatial"
    parts = {}
    for name in (f"bn_stats_{kind}", "bn_apply", f"bn_bwd_reduce_{kind}", "bn_bwd_dx"):
        parts[name] = 1e6 * reports[f"{name}_float"].seconds(n)
    floor = 1e6 * n * 4 * 8 / COPY_RATE
    return {"parts": parts, "total": sum(parts.values()), "floor": floor}


def table(arch: str = "sm_90") -> str:
    reports = analyse(arch)
    lines = [
        f"Static reading of the CuPy kernels for {arch} (NVRTC with CuPy's options; "
        "cuobjdump). ESTIMATES, not measurements.",
        "",
        "| kernel | regs | stack/spill B | blocks/SM | 16-B loads/stores | i64 div in loops "
        "| in flight B/thread | model GB/s (H200) | issue slots/elem |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(reports):
        r = reports[name]
        if r.spec is None and not name.endswith("_float"):
            continue
        bw = r.bandwidth()
        per_elem = f"{r.slots_per_element:.1f}" if r.slots_per_element else "-"
        lines.append(
            f"| {name} | {r.resources.registers} | {r.resources.stack}/{r.resources.local} | "
            f"{r.blocks_per_sm} | {r.wide['LDG.128']}/{r.wide['STG.128']} | "
            f"{r.int64_div_in_loops} | {r.spec.inflight if r.spec else '-'} | "
            f"{bw / 1e9:.0f} | {per_elem} |"
            if r.spec
            else f"| {name} | {r.resources.registers} | {r.resources.stack}/{r.resources.local} | "
            f"{r.blocks_per_sm} | {r.wide['LDG.128']}/{r.wide['STG.128']} | "
            f"{r.int64_div_in_loops} | - | - | - |"
        )
    acts = [r for n, r in sorted(reports.items()) if r.spec and n in _activation_specs()]
    worst = max(acts, key=lambda r: r.slots_per_element)
    low, high = (f"{100 * f(r.copy_fraction() for r in acts):.0f}" for f in (min, max))
    lines += [
        "",
        f"Activations, float32, fwd and bwd ({len(acts)} kernels): the model's rate is "
        f"{low if low == high else f'{low}-{high}'} % of the copy rate (the most issue-heavy: "
        f"{worst.name}, {worst.slots_per_element:.1f} issue slots per element) -- ESTIMATE.",
    ]
    lines += [
        "",
        "BatchNorm fwd+bwd, float32, training, on an H200 -- ESTIMATE from the model above:",
        "",
        "| shape | stats | apply | bwd reduce | dx | total (est.) | 8-pass floor | torch "
        "(measured) | target (torch / 1.5) | meets |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape, torch_us in TORCH_BN_US.items():
        e = batchnorm_estimate(reports, shape)
        p = list(e["parts"].values())
        target = torch_us / TARGET
        lines.append(
            f"| {'x'.join(map(str, shape))} | "
            + " | ".join(f"{v:.0f}" for v in p)
            + f" | {e['total']:.0f} us | {e['floor']:.0f} us | {torch_us:.0f} us | "
            f"{target:.0f} us | {'yes' if e['total'] <= target else 'NO'} |"
        )
    return "\n".join(lines)


def main(arch: str = "sm_90") -> int:
    problem = cuda_tools.available()
    if problem:
        print(f"gpu-static: {problem}")
        return 1
    print(table(arch))
    return 0
