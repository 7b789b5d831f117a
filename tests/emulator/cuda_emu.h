// CUDA's execution semantics on the CPU, for running gpunet's CUDA C kernels in tests without a GPU.
//
// Compiled (g++ -std=c++20) in front of the real kernel sources (kernels/*.cuh) by
// tests/emulator/build.py. What it gives the kernels:
//   * threadIdx / blockIdx / blockDim / gridDim. One launch runs every thread of a block as a real
//     std::thread (a pool, created once); the blocks run one after another in a shuffled order (the
//     GPU promises none, so a kernel that depends on block order fails).
//   * __syncthreads(): a barrier of the block's threads (an atomic word and a futex wait). A thread that has returned from the kernel
//     counts as arrived (as exited warps do on the hardware), so an early `return` does not hang.
//   * __shared__: one object per kernel function, which the block's threads share; blocks never
//     overlap, so one object serves every block in turn.
//   * atomics, __threadfence and __ldcg as sequentially consistent operations.
//   * float4 / double2 with their 16-byte alignment; every reinterpret_cast of a pointer checks
//     that the address is aligned for the type it is cast to (a GPU faults with "misaligned
//     address" on the load); the faulting thread leaves the kernel before the access, the
//     remaining blocks are skipped, and the launch reports the fault.
// Warp intrinsics are not provided: no gpunet kernel uses one (a kernel that starts to will fail
// to compile here, which is the signal to add them).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };

namespace gpunet_emu {

inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline std::atomic<int> fault{0};
inline char fault_message[512];

// Thrown by a thread that faults: it leaves the kernel at once (a GPU aborts the launch), so that
// the faulting access itself never runs on the host.
struct KernelFault {};

inline void set_fault(const char *message) {
    int expected = 0;
    if (fault.compare_exchange_strong(expected, 1))
        std::snprintf(fault_message, sizeof fault_message, "%s", message);
}

// The barrier of one block, on one 64-bit word (threads still in the block << 32 | arrived), so
// that exactly one thread sees the barrier complete, whether by arriving or by leaving the
// kernel. Waiting is C++20's atomic wait (a futex): no mutex for 256 threads to queue on.
class BlockBarrier {
  public:
    void reset(int n) { state_.store(std::uint64_t(n) << 32); }
    void sync() {
        unsigned int generation = generation_.load();
        std::uint64_t old = state_.load(), next;
        do {
            next = old + 1;
        } while (!state_.compare_exchange_weak(old, next));
        if (std::uint32_t(next) == (next >> 32)) {
            release(next);
            return;
        }
        // (a divergent __syncthreads, which not every thread reaches, hangs here as on a GPU)
        while (generation_.load() == generation) generation_.wait(generation);
    }
    void exit_block() {  // this thread returned from the kernel for the current block
        std::uint64_t old = state_.load(), next;
        do {
            next = old - (std::uint64_t(1) << 32);
        } while (!state_.compare_exchange_weak(old, next));
        std::uint32_t arrived = std::uint32_t(next);
        if (arrived > 0 && arrived == (next >> 32)) release(next);
    }

  private:
    void release(std::uint64_t completed) {
        state_.store(completed & ~std::uint64_t(0xffffffffu));  // arrived = 0, same thread count
        generation_.fetch_add(1);
        generation_.notify_all();
    }
    std::atomic<std::uint64_t> state_{0};
    std::atomic<unsigned int> generation_{0};
};

// Counts arrivals of all launch threads at the end of a block; the last one prepares the next.
class EndOfBlock {
  public:
    void reset(int n) {
        total_ = n;
        arrived_.store(0);
    }
    template <class F> void arrive_and_wait(const F &last) {
        unsigned int generation = generation_.load();
        if (arrived_.fetch_add(1) + 1 == total_) {
            arrived_.store(0);
            last();
            generation_.fetch_add(1);
            generation_.notify_all();
        } else {
            while (generation_.load() == generation) generation_.wait(generation);
        }
    }

  private:
    int total_ = 0;
    std::atomic<int> arrived_{0};
    std::atomic<unsigned int> generation_{0};
};

inline BlockBarrier block_barrier;
inline EndOfBlock end_of_block;
inline std::mutex launch_mutex;  // launches run one at a time, as on one stream

// The launch threads are created once and kept (creating 256 threads per launch costs more than
// most test kernels): worker t runs CUDA thread t of every block of every launch that has one.
struct Pool {
    std::vector<std::thread *> workers;
    std::atomic<unsigned int> launch_generation{0};
    std::atomic<int> running{0};
    const std::function<void()> *kernel = nullptr;
    const std::vector<dim3> *order = nullptr;
    int nthreads = 0;
};
inline Pool pool;

inline void run_thread(int t) {
    thread_idx = dim3{t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y)};
    for (const dim3 &b : *pool.order) {
        block_idx = b;
        if (fault.load() == 0) {  // after a fault, the remaining blocks do not run
            try {
                (*pool.kernel)();
            } catch (const KernelFault &) {
            }
        }
        block_barrier.exit_block();
        // every thread leaves this block before any thread enters the next one
        end_of_block.arrive_and_wait([] { block_barrier.reset(pool.nthreads); });
    }
}

inline void worker_main(int t) {
    unsigned int seen = 0;
    for (;;) {
        while (pool.launch_generation.load() == seen) pool.launch_generation.wait(seen);
        seen = pool.launch_generation.load();
        if (t < pool.nthreads) {
            run_thread(t);
            if (pool.running.fetch_sub(1) == 1) pool.running.notify_all();
        }
    }
}

// Run kernel() for every thread of every block. Returns 0, or 1 with fault_message set.
inline int launch(const unsigned int *grid, const unsigned int *block, unsigned long long seed,
                  const std::function<void()> &kernel) {
    std::lock_guard<std::mutex> guard(launch_mutex);
    fault.store(0);
    grid_dim = dim3{grid[0], grid[1], grid[2]};
    block_dim = dim3{block[0], block[1], block[2]};
    std::vector<dim3> order;
    for (unsigned int z = 0; z < grid[2]; ++z)
        for (unsigned int y = 0; y < grid[1]; ++y)
            for (unsigned int x = 0; x < grid[0]; ++x) order.push_back(dim3{x, y, z});
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    const int nthreads = int(block[0] * block[1] * block[2]);
    while (int(pool.workers.size()) < nthreads) {
        // never joined or destroyed: they wait for the next launch until the process exits
        pool.workers.push_back(new std::thread(worker_main, int(pool.workers.size())));
        pool.workers.back()->detach();
    }
    pool.kernel = &kernel;
    pool.order = &order;
    pool.nthreads = nthreads;
    block_barrier.reset(nthreads);
    end_of_block.reset(nthreads);
    pool.running.store(nthreads);
    pool.launch_generation.fetch_add(1);
    pool.launch_generation.notify_all();
    for (int left; (left = pool.running.load()) != 0;) pool.running.wait(left);
    return fault.load();
}

template <class To, class From> inline To checked_cast(From p) {
    if constexpr (std::is_pointer_v<To> && std::is_pointer_v<From>) {
        using Pointee = std::remove_cv_t<std::remove_pointer_t<To>>;
        if constexpr (!std::is_void_v<Pointee>) {
            if (reinterpret_cast<std::uintptr_t>(p) % alignof(Pointee) != 0) {
                char message[160];
                std::snprintf(message, sizeof message,
                              "misaligned address: %p cast to a type of alignment %zu", (const void *)p,
                              alignof(Pointee));
                set_fault(message);
                throw KernelFault{};
            }
        }
    }
    return reinterpret_cast<To>(p);
}

}  // namespace gpunet_emu

#define threadIdx (gpunet_emu::thread_idx)
#define blockIdx (gpunet_emu::block_idx)
#define blockDim (gpunet_emu::block_dim)
#define gridDim (gpunet_emu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

inline void __syncthreads() { gpunet_emu::block_barrier.sync(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

inline unsigned int atomicAdd(unsigned int *p, unsigned int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
template <class T> inline T atomicCAS(T *p, T compare, T value) {
    __atomic_compare_exchange_n(p, &compare, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;  // the old value, as CUDA returns
}
template <class T> inline T gpunet_emu_atomic_add_float(T *p, T v) {
    T old;
    __atomic_load(p, &old, __ATOMIC_SEQ_CST);
    T desired;
    do { desired = old + v; } while (!__atomic_compare_exchange(p, &old, &desired, false, __ATOMIC_SEQ_CST,
                                                                 __ATOMIC_SEQ_CST));
    return old;
}
inline float atomicAdd(float *p, float v) { return gpunet_emu_atomic_add_float(p, v); }
inline double atomicAdd(double *p, double v) { return gpunet_emu_atomic_add_float(p, v); }
template <class T> inline T __ldcg(const T *p) {
    T value;
    __atomic_load(p, &value, __ATOMIC_SEQ_CST);
    return value;
}
inline double __longlong_as_double(long long v) {
    double d;
    std::memcpy(&d, &v, sizeof d);
    return d;
}
inline long long __double_as_longlong(double v) {
    long long i;
    std::memcpy(&i, &v, sizeof i);
    return i;
}

// CUDA's math library: float and double overloads, as device code has them.
using std::erf;
using std::exp;
using std::expm1;
using std::fabs;
using std::isinf;
using std::isnan;
using std::log;
using std::log1p;
using std::sqrt;
using std::tanh;

// Last, after every standard header: every pointer cast in the kernels is checked for alignment.
#define reinterpret_cast gpunet_emu::checked_cast
