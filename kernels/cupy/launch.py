"""Grids from the device, for every per-channel reduction: how many blocks of a kernel fit on one
SM (the CUDA occupancy rules, from the compiled kernel's registers and shared memory), and a split
of each group's work into blocks that fill whole waves of the chip. No CuPy here: the static
checks (gpunet.bench.gpu_static) and the tests run the same rule with the SM counts of an
H100/H200 (132) and an A100 (108).
"""

from __future__ import annotations

from dataclasses import dataclass

#: values per block below which a block is all launch and merge overhead
MIN_PER_BLOCK = 2048
#: chunks are multiples of this, so that 16-byte loads (4 floats, 2 doubles) stay aligned
ALIGN = 4


@dataclass(frozen=True)
class SMLimits:
    """Per SM: registers, resident threads and blocks, shared memory bytes; and the SM count."""

    sms: int
    registers: int = 65536
    threads: int = 2048
    blocks: int = 32
    shared: int = 233472


#: the GPUs we target (CUDA C Programming Guide, "Compute Capabilities")
H100 = SMLimits(132)
A100 = SMLimits(108, shared=167936)


def resident_blocks(registers: int, shared: int, threads: int, limits: SMLimits) -> int:
    """Blocks of ``threads`` threads one SM holds at once: registers are allocated per warp in
    units of 256, shared memory in units of 128 bytes plus 1 KiB the runtime reserves per block."""
    warps = -(-threads // 32)
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = limits.registers // (per_warp * warps)
    by_shared = limits.shared // (-(-shared // 128) * 128 + 1024) if shared else limits.blocks
    return max(1, min(limits.blocks, limits.threads // (warps * 32), by_regs, by_shared))


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def split(total: int, groups: int, wave: int, min_per_block: int = MIN_PER_BLOCK) -> tuple:
    """(nparts, chunk): each of ``groups`` groups of ``total`` values cut into ``nparts`` blocks
    of ``chunk`` values (a multiple of ALIGN). nparts is chosen so that the groups * nparts
    blocks fill whole waves of ``wave`` resident blocks as well as possible (up to four waves;
    the fewest blocks among equally full choices), never blocks of fewer than
    ``min_per_block`` values; a problem too small for one wave gets as many blocks as it can."""
    limit = max(1, min(_ceil(total, min_per_block), _ceil(4 * wave, max(groups, 1))))

    def fill(p: int) -> float:
        blocks = groups * p
        return blocks / wave if blocks <= wave else waves(blocks, wave)

    nparts = max(range(1, limit + 1), key=lambda p: (round(fill(p), 3), -p))
    chunk = max(ALIGN, _ceil(_ceil(total, nparts), ALIGN) * ALIGN)
    return (_ceil(total, chunk) if total else 1), chunk


def waves(blocks: int, wave: int) -> float:
    """How full the last wave is: blocks / (whole waves * wave), 1.0 for whole waves."""
    return blocks / (_ceil(blocks, wave) * wave)
