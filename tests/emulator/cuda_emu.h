// CUDA's execution semantics on the CPU, with compute-sanitizer's checks, for running gpunet's
// CUDA C kernels in tests without a GPU.
//
// Compiled (g++ -std=c++20 -O2 -fsanitize=kernel-address) in front of the real kernel sources
// (kernels/cupy/*.cuh) by tests/emulator/build.py. What it gives the kernels:
//   * threadIdx / blockIdx / blockDim / gridDim. One launch runs every thread of a block as a real
//     std::thread (a pool, created once); the blocks run one after another in a shuffled order (the
//     GPU promises none, so a kernel that depends on block order fails). Two copies of one library
//     can run the blocks of one launch concurrently (build.py loads the copy; fake_cupy drives it).
//   * __shared__: one object per kernel function, which the block's threads share.
//   * atomics, __threadfence and __ldcg as sequentially consistent operations.
//   * float4 / double2 with their 16-byte alignment; every reinterpret_cast of a pointer checks
//     that the address is aligned for the type it is cast to ("misaligned address" on a GPU).
//   * float kernels (names ending in _float) run with denormals flushed to zero, as CuPy's
//     -ftz=true compiles them; FMA contraction is on (-ffp-contract=fast), as NVRTC's --fmad=true.
// The checkers (each reports the kernel, block, thread and location; the launch fails):
//   * memcheck: every load and store of the kernel (GCC's kernel-address instrumentation calls the
//     __asan_* hooks below) is looked up in the launch's argument allocations; one that lands in the
//     guard zone fake_cupy puts around each allocation is out of bounds. The faulting thread leaves
//     the kernel before the access (longjmp), the remaining blocks are skipped.
//   * racecheck: each byte of __shared__ memory has a shadow word (last writer, readers, barrier
//     interval); two threads touching one byte between two barriers, one of them writing, is a hazard.
//   * initcheck: a __shared__ byte that no thread of the block wrote is reported when it is read.
//   * synccheck: a barrier completes only when every thread of the block is at it; threads at
//     different __syncthreads() sites, or a thread that leaves the kernel while others wait at (or
//     later reach) a barrier, is an error. A launch that makes no progress for GPUNET_EMU_HANG_SECONDS
//     (default 5) is reported as a hang, naming where each thread is.
// Warp intrinsics are not provided: no gpunet kernel uses one (a kernel that starts to will fail
// to compile here, which is the signal to add them).
#pragma once

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <xmmintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };

#define GPUNET_EMU_NOSAN __attribute__((no_sanitize_address))
// The emulator's own state lives in one section, so that the sanitizer can tell it apart from the
// kernels' __shared__ objects (which are the rest of the library's writable data).
#define GPUNET_EMU_STATE __attribute__((section("gpunet_emu_state")))

extern "C" char __start_gpunet_emu_state[], __stop_gpunet_emu_state[];

namespace gpunet_emu {

constexpr int kMaxThreads = 1024;
constexpr int kMaxArgs = 64;
constexpr std::uint16_t kManyReaders = 0xffff;

struct Allocation {
    std::uintptr_t start, end;    // the allocation: [start, end)
    std::uintptr_t lo, hi;        // with its guard zones: [lo, hi)
    int arg;                      // the kernel argument it came from
};

enum Where : int { kRunning = 0, kAtBarrier = 1, kExited = 2 };

struct ThreadState {
    int tid = -1;                 // linear thread index in the block
    bool in_kernel = false;
    std::uintptr_t stack_lo = 0, stack_hi = 0;
    jmp_buf abort;                // where a faulting thread leaves the kernel
};
static thread_local ThreadState self;
static thread_local dim3 thread_idx, block_idx;

GPUNET_EMU_STATE static dim3 block_dim, grid_dim;
GPUNET_EMU_STATE static std::atomic<int> fault{0};
GPUNET_EMU_STATE static char fault_message[2048];
GPUNET_EMU_STATE static const char *kernel_name = "?";
GPUNET_EMU_STATE static Allocation allocs[kMaxArgs];
GPUNET_EMU_STATE static int nallocs = 0;
GPUNET_EMU_STATE static std::uintptr_t shared_lo = 0, shared_hi = 0;  // the library's writable data
GPUNET_EMU_STATE static std::uint64_t *shadow = nullptr;              // one word per byte of it
GPUNET_EMU_STATE static std::atomic<unsigned int> interval{1};        // barrier interval id
// the interval the current block started in: a shadow word stamped earlier is another block's
GPUNET_EMU_STATE static std::atomic<unsigned int> block_first_interval{1};
GPUNET_EMU_STATE static std::atomic<unsigned long long> progress{0};
GPUNET_EMU_STATE static std::atomic<int> where_[kMaxThreads];
GPUNET_EMU_STATE static int site_[kMaxThreads];
GPUNET_EMU_STATE static std::atomic<std::size_t> block_number{0};  // of this slot's blocks

inline std::string thread_text(int t) {
    char s[64];
    std::snprintf(s, sizeof s, "(%u,%u,%u)", t % block_dim.x, (t / block_dim.x) % block_dim.y,
                  t / (block_dim.x * block_dim.y));
    return s;
}

GPUNET_EMU_NOSAN inline std::string here() {
    char s[160];
    std::snprintf(s, sizeof s, "kernel '%s', block (%u,%u,%u), thread %s", kernel_name, block_idx.x,
                  block_idx.y, block_idx.z, thread_text(self.tid).c_str());
    return s;
}

GPUNET_EMU_NOSAN inline bool set_fault(const std::string &message) {
    int expected = 0;
    if (fault.compare_exchange_strong(expected, 1)) {
        std::snprintf(fault_message, sizeof fault_message, "%s", message.c_str());
        return true;
    }
    return false;
}

void wake_waiters();

// The calling thread leaves the kernel now (a GPU aborts the launch at a fault).
[[noreturn]] GPUNET_EMU_NOSAN inline void abort_thread() { longjmp(self.abort, 1); }

GPUNET_EMU_NOSAN inline std::string location(std::uintptr_t a);

GPUNET_EMU_NOSAN inline void report(const std::string &what, std::uintptr_t pc = 0) {
    self.in_kernel = false;  // what follows is the emulator's work, not the kernel's
    set_fault(what + " (" + here() + (pc ? ", code " + location(pc - 1) : std::string()) + ")");
    wake_waiters();
    abort_thread();
}

// ------------------------------------------------------------------ memcheck
GPUNET_EMU_NOSAN inline std::string location(std::uintptr_t a) {
    char s[96];
    // the library's own offset: fake_cupy names the symbol (nm) that holds it
    Dl_info info;
    if (dladdr(reinterpret_cast<void *>(a), &info) && info.dli_fbase)
        std::snprintf(s, sizeof s, "@so+0x%lx", (unsigned long)(a - (std::uintptr_t)info.dli_fbase));
    else
        std::snprintf(s, sizeof s, "0x%lx", (unsigned long)a);
    return s;
}

// The shadow word of one byte of __shared__ memory: written (1 bit) | interval (31) |
// last writer (16: thread + 1) | reader (16: thread + 1, or many). A word stamped with an interval
// before the block's first was written by an earlier block: unwritten for this one (no reset of the
// shadow per block; intervals are 31 bits, far more than a test process's barriers).
GPUNET_EMU_NOSAN inline void shared_access(std::uintptr_t a, std::size_t size, bool write,
                                           std::uintptr_t pc) {
    const std::uint16_t me = std::uint16_t(self.tid + 1);
    const std::uint64_t cur = interval.load(std::memory_order_relaxed) & 0x7fffffffu;
    const std::uint64_t first = block_first_interval.load(std::memory_order_relaxed) & 0x7fffffffu;
    for (std::size_t i = 0; i < size; ++i) {
        std::uint64_t *word = &shadow[a + i - shared_lo];
        std::uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED), next;
        const char *hazard = nullptr;
        int other = 0;
        do {
            std::uint64_t iv = (old >> 32) & 0x7fffffffu;
            bool init = (old >> 63) && iv >= first;
            std::uint16_t writer = (old >> 16) & 0xffff, reader = old & 0xffff;
            if (iv != cur) writer = reader = 0;
            hazard = nullptr;
            if (write) {
                if (writer && writer != me) hazard = "write-after-write", other = writer;
                else if (reader && reader != me) hazard = "write-after-read", other = reader;
                writer = me;
                init = true;
            } else {
                if (!init) hazard = "uninitialized";
                else if (writer && writer != me) hazard = "read-after-write", other = writer;
                reader = (reader == 0 || reader == me) ? me : kManyReaders;
            }
            next = (std::uint64_t(init) << 63) | (cur << 32) | (std::uint64_t(writer) << 16) | reader;
        } while (!__atomic_compare_exchange_n(word, &old, next, true, __ATOMIC_RELAXED,
                                              __ATOMIC_RELAXED));
        if (hazard && std::strcmp(hazard, "uninitialized") == 0) {
            report("initcheck: " + std::string(write ? "write" : "read") + " of " +
                   std::to_string(size) + " bytes of __shared__ memory at " + location(a + i) +
                   " that no thread of this block has written (or a __syncthreads() is missing before"
                   " this read)",
                   pc);
        } else if (hazard) {
            std::string who = other == kManyReaders ? std::string("several threads")
                                                    : "thread " + thread_text(other - 1);
            report(std::string("racecheck: shared memory ") + hazard + " hazard at " +
                   location(a + i) + ": this thread " + (write ? "writes" : "reads") +
                   " a byte that " + who + (write && !std::strstr(hazard, "after-write") ? " read" : " wrote") +
                   " since the last __syncthreads()",
                   pc);
        }
    }
}

GPUNET_EMU_NOSAN inline void check_access(std::uintptr_t a, std::size_t size, bool write,
                                          std::uintptr_t pc) {
    if (!self.in_kernel) return;
    if (fault.load(std::memory_order_relaxed)) abort_thread();
    if (a >= self.stack_lo && a < self.stack_hi) return;  // the thread's own locals
    for (int k = 0; k < nallocs; ++k)
        if (a >= allocs[k].start && a + size <= allocs[k].end) return;
    for (int k = 0; k < nallocs; ++k) {
        const Allocation &m = allocs[k];
        if (a + size > m.lo && a < m.hi) {
            char s[400];
            if (a >= m.end)
                std::snprintf(s, sizeof s,
                              "memcheck: out-of-bounds %s of %zu bytes at %lu bytes past the end of "
                              "argument %d (an allocation of %lu bytes)",
                              write ? "write" : "read", size, (unsigned long)(a - m.end), m.arg,
                              (unsigned long)(m.end - m.start));
            else
                std::snprintf(s, sizeof s,
                              "memcheck: out-of-bounds %s of %zu bytes at %ld bytes from the start of "
                              "argument %d (an allocation of %lu bytes)",
                              write ? "write" : "read", size, (long)(a - m.start), m.arg,
                              (unsigned long)(m.end - m.start));
            report(s, pc);
        }
    }
    if (a >= shared_lo && a + size <= shared_hi && shadow &&
        !(a >= (std::uintptr_t)__start_gpunet_emu_state && a < (std::uintptr_t)__stop_gpunet_emu_state))
        shared_access(a, size, write, pc);
}

// ------------------------------------------------------------------ synccheck
// The barrier of one block, on one 64-bit word (threads still in the block << 32 | arrived), so
// that exactly one thread sees the barrier complete, whether by arriving or by leaving the
// kernel. Waiting is C++20's atomic wait (a futex).
class BlockBarrier {
  public:
    void reset(int n) {
        n_ = n;
        exited_ = 0;
        state_.store(std::uint64_t(n) << 32);
    }
    GPUNET_EMU_NOSAN void sync(int line) {
        self.in_kernel = false;  // the waiting below is the emulator's, not the kernel's
        site_[self.tid] = line;
        where_[self.tid].store(kAtBarrier);
        unsigned int generation = generation_.load();
        std::uint64_t old = state_.load(), next;
        do {
            next = old + 1;
        } while (!state_.compare_exchange_weak(old, next));
        if (std::uint32_t(next) == (next >> 32)) {
            complete(next);
        } else {
            while (generation_.load() == generation && !fault.load()) generation_.wait(generation);
        }
        if (fault.load()) abort_thread();
        where_[self.tid].store(kRunning);
        self.in_kernel = true;
    }
    GPUNET_EMU_NOSAN void exit_block() {  // this thread returned from the kernel for this block
        where_[self.tid].store(kExited);
        exited_.fetch_add(1);
        std::uint64_t old = state_.load(), next;
        do {
            next = old - (std::uint64_t(1) << 32);
        } while (!state_.compare_exchange_weak(old, next));
        std::uint32_t arrived = std::uint32_t(next);
        if (arrived > 0 && arrived == (next >> 32)) complete(next);
    }
    void wake() {
        generation_.fetch_add(1);
        generation_.notify_all();
    }

  private:
    // Every thread still in the block is at a barrier: check that they are all at the same one
    // and that nobody left before it, then release them.
    GPUNET_EMU_NOSAN void complete(std::uint64_t completed) {
        int first = -1, exited = exited_.load();
        std::string sites;
        for (int t = 0; t < n_; ++t) {
            if (where_[t].load() != kAtBarrier) continue;
            if (first < 0) first = t;
            else if (site_[t] != site_[first] && sites.empty())
                sites = "thread " + thread_text(first) + " waits at the __syncthreads() of line " +
                        std::to_string(site_[first]) + ", thread " + thread_text(t) +
                        " at the one of line " + std::to_string(site_[t]);
        }
        char where[200];
        std::snprintf(where, sizeof where, " (kernel '%s', block (%u,%u,%u))", kernel_name,
                      block_idx.x, block_idx.y, block_idx.z);
        if (!sites.empty()) {
            set_fault("synccheck: divergent barrier: " + sites + where);
        } else if (exited > 0) {
            int gone = -1;
            for (int t = 0; t < n_ && gone < 0; ++t)
                if (where_[t].load() == kExited) gone = t;
            set_fault("synccheck: the __syncthreads() of line " + std::to_string(site_[first]) +
                      " is reached by " + std::to_string(n_ - exited) + " of " +
                      std::to_string(n_) + " threads: " + std::to_string(exited) +
                      " left the kernel without reaching it (thread " + thread_text(gone) +
                      " among them)" + where);
        }
        state_.store(completed & ~std::uint64_t(0xffffffffu));  // arrived = 0, same thread count
        interval.fetch_add(1);
        progress.fetch_add(1);
        wake();
    }
    int n_ = 0;
    std::atomic<int> exited_{0};
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

GPUNET_EMU_STATE static BlockBarrier block_barrier;
GPUNET_EMU_STATE static EndOfBlock end_of_block;
GPUNET_EMU_STATE static std::mutex launch_mutex;  // launches of one library run one at a time

inline void wake_waiters() { block_barrier.wake(); }

// The launch threads are created once and kept (creating 256 threads per launch costs more than
// most test kernels): worker t runs CUDA thread t of every block of every launch that has one.
struct Pool {
    std::vector<std::thread *> workers;
    std::atomic<unsigned int> launch_generation{0};
    std::atomic<int> running{0};
    std::mutex done_mutex;
    std::condition_variable done;
    const std::function<void()> *kernel = nullptr;
    std::vector<dim3> order;
    int nthreads = 0;
    bool ftz = false;
};
GPUNET_EMU_STATE static Pool pool;

// Before each block: a fresh barrier, and a new first interval (__shared__ memory that nobody
// has written in this block).
inline void start_block() {
    block_barrier.reset(pool.nthreads);
    for (int t = 0; t < pool.nthreads; ++t) where_[t].store(kRunning);
    block_first_interval.store(interval.fetch_add(1) + 1);
}

GPUNET_EMU_NOSAN inline void run_block(const std::function<void()> &kernel) {
    if (setjmp(self.abort) == 0) {
        self.in_kernel = true;
        kernel();
    }
    self.in_kernel = false;
}

inline void run_thread(int t) {
    self.tid = t;
    thread_idx = dim3{t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y)};
    unsigned int csr = _mm_getcsr() & ~0x8040u;  // FTZ (bit 15) and DAZ (bit 6)
    _mm_setcsr(pool.ftz ? csr | 0x8040u : csr);
    for (const dim3 &b : pool.order) {
        block_idx = b;
        if (fault.load() == 0) run_block(*pool.kernel);  // after a fault, no further block runs
        block_barrier.exit_block();
        // every thread leaves this block before any thread enters the next one
        end_of_block.arrive_and_wait([] {
            progress.fetch_add(1);
            block_number.fetch_add(1);
            start_block();
        });
    }
}

// `seen` is the launch generation when the worker was made: it takes part from the next launch on
// (starting from 0 it would join the launch under way early, and then once more: a stray thread)
inline void worker_main(int t, unsigned int seen) {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *base;
        std::size_t size;
        pthread_attr_getstack(&attr, &base, &size);
        self.stack_lo = (std::uintptr_t)base;
        self.stack_hi = self.stack_lo + size;
        pthread_attr_destroy(&attr);
    }
    for (;;) {
        while (pool.launch_generation.load() == seen) pool.launch_generation.wait(seen);
        seen = pool.launch_generation.load();
        if (t < pool.nthreads) {
            run_thread(t);
            if (pool.running.fetch_sub(1) == 1) {
                std::lock_guard<std::mutex> lock(pool.done_mutex);
                pool.done.notify_all();
            }
        }
    }
}

// The library's writable data (where the kernels' __shared__ objects are) and its shadow.
inline int find_segment(struct dl_phdr_info *info, size_t, void *data) {
    auto marker = reinterpret_cast<std::uintptr_t>(data);
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const auto &ph = info->dlpi_phdr[i];
        std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
        if (ph.p_type == PT_LOAD && (ph.p_flags & PF_W) && marker >= lo && marker < hi) {
            shared_lo = lo;
            shared_hi = hi;
            return 1;
        }
    }
    return 0;
}

inline void find_shared_memory() {
    if (shadow) return;
    dl_iterate_phdr(find_segment, (void *)&block_dim);
    if (shared_hi > shared_lo) shadow = new std::uint64_t[shared_hi - shared_lo]();
}

inline std::string hang_report(double seconds) {
    char head[200];
    dim3 b = pool.order[std::min(block_number.load(), pool.order.size() - 1)];
    std::snprintf(head, sizeof head,
                  "hang: no progress for %.0f s (kernel '%s', block (%u,%u,%u)):", seconds,
                  kernel_name, b.x, b.y, b.z);
    std::string text = head;
    // runs of threads in the same state
    int t = 0;
    while (t < pool.nthreads) {
        int w = where_[t].load(), s = site_[t], u = t;
        while (u + 1 < pool.nthreads && where_[u + 1].load() == w && (w != kAtBarrier || site_[u + 1] == s)) ++u;
        text += " threads " + std::to_string(t) + "-" + std::to_string(u) +
                (w == kAtBarrier ? " wait at the __syncthreads() of line " + std::to_string(s)
                 : w == kExited  ? " have left the kernel"
                                 : " are running (a loop that waits for another block?)");
        text += ";";
        t = u + 1;
    }
    return text;
}

// Run kernel() for every thread of the blocks of this slot (blocks slot, slot + nslots, ... of
// the shuffled order). Returns 0, 1 with fault_message set, or 2 if threads are stuck for good.
inline int launch(const char *name, const unsigned int *grid, const unsigned int *block,
                  unsigned long long seed, int slot, int nslots, int ftz,
                  const unsigned long long *arg_allocs, int n_allocs, double hang_seconds,
                  const std::function<void()> &kernel) {
    std::lock_guard<std::mutex> guard(launch_mutex);
    find_shared_memory();
    fault.store(0);
    kernel_name = name;
    nallocs = std::min(n_allocs, kMaxArgs);
    for (int k = 0; k < nallocs; ++k) {
        const unsigned long long *m = arg_allocs + 5 * k;
        allocs[k] = Allocation{m[0], m[1], m[2], m[3], int(m[4])};
    }
    grid_dim = dim3{grid[0], grid[1], grid[2]};
    block_dim = dim3{block[0], block[1], block[2]};
    std::vector<dim3> order;
    for (unsigned int z = 0; z < grid[2]; ++z)
        for (unsigned int y = 0; y < grid[1]; ++y)
            for (unsigned int x = 0; x < grid[0]; ++x) order.push_back(dim3{x, y, z});
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    pool.order.clear();
    for (std::size_t i = slot; i < order.size(); i += nslots) pool.order.push_back(order[i]);
    if (pool.order.empty()) return 0;
    const int nthreads = int(block[0] * block[1] * block[2]);
    while (int(pool.workers.size()) < nthreads) {
        // never joined or destroyed: they wait for the next launch until the process exits
        pool.workers.push_back(new std::thread(worker_main, int(pool.workers.size()),
                                                 pool.launch_generation.load()));
        pool.workers.back()->detach();
    }
    pool.kernel = &kernel;
    pool.nthreads = nthreads;
    pool.ftz = ftz != 0;
    end_of_block.reset(nthreads);
    block_number.store(0);
    start_block();
    pool.running.store(nthreads);
    pool.launch_generation.fetch_add(1);
    pool.launch_generation.notify_all();
    std::unique_lock<std::mutex> lock(pool.done_mutex);
    auto seen = progress.load();
    auto since = std::chrono::steady_clock::now();
    while (pool.running.load() != 0) {
        pool.done.wait_for(lock, std::chrono::milliseconds(50));
        if (progress.load() != seen) {
            seen = progress.load();
            since = std::chrono::steady_clock::now();
        } else if (std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count() >
                   hang_seconds) {
            set_fault(hang_report(hang_seconds));
            wake_waiters();
            // threads that only spin on registers cannot be stopped: give them a moment
            for (int i = 0; i < 40 && pool.running.load() != 0; ++i)
                pool.done.wait_for(lock, std::chrono::milliseconds(50));
            if (pool.running.load() != 0) return 2;
            break;
        }
    }
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
                report(message);
            }
        }
    }
    return reinterpret_cast<To>(p);
}

}  // namespace gpunet_emu

// GCC's kernel-address instrumentation calls these before every load and store of the kernels.
#define GPUNET_EMU_HOOKS(N)                                                                        \
    extern "C" GPUNET_EMU_NOSAN void __asan_load##N##_noabort(std::uintptr_t a) {                 \
        gpunet_emu::check_access(a, N, false, (std::uintptr_t)__builtin_return_address(0));                                                     \
    }                                                                                              \
    extern "C" GPUNET_EMU_NOSAN void __asan_store##N##_noabort(std::uintptr_t a) {                \
        gpunet_emu::check_access(a, N, true, (std::uintptr_t)__builtin_return_address(0));                                                      \
    }
GPUNET_EMU_HOOKS(1)
GPUNET_EMU_HOOKS(2)
GPUNET_EMU_HOOKS(4)
GPUNET_EMU_HOOKS(8)
GPUNET_EMU_HOOKS(16)
extern "C" GPUNET_EMU_NOSAN void __asan_loadN_noabort(std::uintptr_t a, std::size_t n) {
    gpunet_emu::check_access(a, n, false, (std::uintptr_t)__builtin_return_address(0));
}
extern "C" GPUNET_EMU_NOSAN void __asan_storeN_noabort(std::uintptr_t a, std::size_t n) {
    gpunet_emu::check_access(a, n, true, (std::uintptr_t)__builtin_return_address(0));
}
extern "C" GPUNET_EMU_NOSAN void __asan_handle_no_return() {}
extern "C" GPUNET_EMU_NOSAN void __asan_before_dynamic_init(const void *) {}
extern "C" GPUNET_EMU_NOSAN void __asan_after_dynamic_init() {}

#define threadIdx (gpunet_emu::thread_idx)
#define blockIdx (gpunet_emu::block_idx)
#define blockDim (gpunet_emu::block_dim)
#define gridDim (gpunet_emu::grid_dim)
#define __global__
#define __launch_bounds__(...)
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

inline void __syncthreads(int line = __builtin_LINE()) { gpunet_emu::block_barrier.sync(line); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Atomics: bounds-checked, never a race.
#define GPUNET_EMU_ATOMIC_CHECK(p) gpunet_emu::check_atomic((std::uintptr_t)(p), sizeof(*(p)))
namespace gpunet_emu {
GPUNET_EMU_NOSAN inline void check_atomic(std::uintptr_t a, std::size_t size) {
    if (!self.in_kernel) return;
    if (fault.load(std::memory_order_relaxed)) abort_thread();
    if (a >= shared_lo && a < shared_hi) return;
    check_access(a, size, false, 0);
}
}  // namespace gpunet_emu

inline unsigned int atomicAdd(unsigned int *p, unsigned int v) {
    GPUNET_EMU_ATOMIC_CHECK(p);
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline int atomicAdd(int *p, int v) {
    GPUNET_EMU_ATOMIC_CHECK(p);
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    GPUNET_EMU_ATOMIC_CHECK(p);
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
template <class T> inline T atomicCAS(T *p, T compare, T value) {
    GPUNET_EMU_ATOMIC_CHECK(p);
    __atomic_compare_exchange_n(p, &compare, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare;  // the old value, as CUDA returns
}
template <class T> GPUNET_EMU_NOSAN inline T gpunet_emu_atomic_add_float(T *p, T v) {
    GPUNET_EMU_ATOMIC_CHECK(p);
    T old;
    __atomic_load(p, &old, __ATOMIC_SEQ_CST);
    T desired;
    do { desired = old + v; } while (!__atomic_compare_exchange(p, &old, &desired, false, __ATOMIC_SEQ_CST,
                                                                 __ATOMIC_SEQ_CST));
    return old;
}
inline float atomicAdd(float *p, float v) { return gpunet_emu_atomic_add_float(p, v); }
inline double atomicAdd(double *p, double v) { return gpunet_emu_atomic_add_float(p, v); }
template <class T> GPUNET_EMU_NOSAN inline T __ldcg(const T *p) {
    gpunet_emu::check_access((std::uintptr_t)p, sizeof(T), false, 0);
    T value;
    if constexpr (sizeof(T) <= 8) __atomic_load(p, &value, __ATOMIC_SEQ_CST);
    else std::memcpy(&value, p, sizeof value);    // float4 / double2: no 16-byte atomics needed
    return value;
}
// the cache-hinted store: an ordinary (checked) store here
template <class T> inline void __stcg(T *p, T v) { *p = v; }
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

// CUDA's integer min and max (device functions of its math headers, found without std::): the
// overloads for int, unsigned and their 64-bit versions; mixed signed/unsigned calls take the
// unsigned one, as CUDA's do.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// Last, after every standard header: every pointer cast in the kernels is checked for alignment.
#define reinterpret_cast gpunet_emu::checked_cast
