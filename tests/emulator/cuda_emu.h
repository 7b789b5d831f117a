// CUDA's execution semantics on the CPU, for running gpunet's CUDA C kernels in tests without a GPU.
//
// Compiled (g++ -std=c++20) in front of the real kernel sources (kernels/*.cuh) by
// tests/emulator/build.py. What it gives the kernels:
//   * threadIdx / blockIdx / blockDim / gridDim. One launch runs every thread of a block as a real
//     std::thread; the blocks run one after another in a shuffled order (the GPU promises none, so
//     a kernel that depends on block order fails).
//   * __syncthreads(): a barrier of the block's threads. A thread that has returned from the kernel
//     counts as arrived (as exited warps do on the hardware), so an early `return` does not hang.
//   * __shared__: one object per kernel function, which the block's threads share; blocks never
//     overlap, so one object serves every block in turn.
//   * atomics, __threadfence and __ldcg as sequentially consistent operations.
//   * float4 / double2 with their 16-byte alignment; every reinterpret_cast of a pointer checks
//     that the address is aligned for the type it is cast to (a GPU faults with "misaligned
//     address" on the load); a fault is reported by the launch, not ignored.
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

inline void set_fault(const char *message) {
    int expected = 0;
    if (fault.compare_exchange_strong(expected, 1))
        std::snprintf(fault_message, sizeof fault_message, "%s", message);
}

// The barrier of one block. `expected` counts the threads still running the kernel in this block.
class BlockBarrier {
  public:
    void reset(int n) {
        std::lock_guard<std::mutex> lock(m_);
        expected_ = n;
        arrived_ = 0;
    }
    void sync() {
        std::unique_lock<std::mutex> lock(m_);
        unsigned long generation = generation_;
        if (++arrived_ == expected_) {
            release();
            return;
        }
        if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return generation_ != generation; })) {
            set_fault("__syncthreads() waited 60 s: a divergent barrier (not every thread of the block "
                      "reached the same __syncthreads)");
            release();
        }
    }
    void exit_block() {  // this thread returned from the kernel for the current block
        std::lock_guard<std::mutex> lock(m_);
        --expected_;
        if (arrived_ > 0 && arrived_ == expected_) release();
    }

  private:
    void release() {
        arrived_ = 0;
        ++generation_;
        cv_.notify_all();
    }
    std::mutex m_;
    std::condition_variable cv_;
    int expected_ = 0, arrived_ = 0;
    unsigned long generation_ = 0;
};

inline BlockBarrier block_barrier;
inline std::mutex launch_mutex;  // launches run one at a time, as on one stream

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
    std::mutex end_m;
    std::condition_variable end_cv;
    int finished = 0;
    unsigned long round = 0;
    block_barrier.reset(nthreads);
    auto body = [&](int t) {
        thread_idx = dim3{t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
        for (const dim3 &b : order) {
            block_idx = b;
            kernel();
            block_barrier.exit_block();
            // every thread leaves this block before any thread enters the next one
            std::unique_lock<std::mutex> lock(end_m);
            unsigned long my_round = round;
            if (++finished == nthreads) {
                finished = 0;
                ++round;
                block_barrier.reset(nthreads);
                end_cv.notify_all();
            } else {
                end_cv.wait(lock, [&] { return round != my_round; });
            }
        }
    };
    std::vector<std::thread> threads;
    threads.reserve(nthreads);
    for (int t = 0; t < nthreads; ++t) threads.emplace_back(body, t);
    for (auto &th : threads) th.join();
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
