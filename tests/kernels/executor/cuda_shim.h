// The CUDA built-ins that kernels/*.cu use, for compiling those files unmodified as host C++
// (g++ -x c++ -include cuda_shim.h). Every CUDA thread runs as a fiber of runtime.cpp; the built-in
// variables are that fiber's, and each warp intrinsic parks the fiber until every lane named in its
// mask has arrived at the same call site (runtime.cpp checks that and fails the launch otherwise).
#pragma once

#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };

struct CuemuBuiltins { uint3 thread, block; dim3 block_dim, grid_dim; };

extern "C" {
// Out of line on purpose: runtime.cpp is never ThreadSanitizer-instrumented, so the emulator's own
// bookkeeping is not reported as a race between fibers.
const CuemuBuiltins* cuemu_builtins();
unsigned long long cuemu_warp_op(int op, unsigned int mask, unsigned long long value, int arg,
                                 int width, const char* file, int line);
}

#define threadIdx (cuemu_builtins()->thread)
#define blockIdx (cuemu_builtins()->block)
#define blockDim (cuemu_builtins()->block_dim)
#define gridDim (cuemu_builtins()->grid_dim)
#define warpSize 32

enum { CUEMU_BALLOT, CUEMU_ANY, CUEMU_ALL, CUEMU_SHFL, CUEMU_SHFL_UP, CUEMU_SHFL_DOWN,
       CUEMU_SHFL_XOR, CUEMU_SYNCWARP };

template <typename T>
inline T cuemu_shfl(int op, unsigned int mask, T var, int arg, int width, const char* file, int line)
{
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    bits = cuemu_warp_op(op, mask, bits, arg, width, file, line);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

#define __ballot_sync(mask, pred) \
    ((unsigned int)cuemu_warp_op(CUEMU_BALLOT, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, pred) \
    ((int)cuemu_warp_op(CUEMU_ANY, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, pred) \
    ((int)cuemu_warp_op(CUEMU_ALL, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __syncwarp(...) \
    ((void)cuemu_warp_op(CUEMU_SYNCWARP, cuemu_syncwarp_mask(__VA_ARGS__), 0, 0, 32, __FILE__, __LINE__))
inline unsigned int cuemu_syncwarp_mask(unsigned int mask = 0xffffffffu) { return mask; }
#define CUEMU_SHFL_ARGS(op, mask, var, arg, ...) \
    cuemu_shfl((op), (mask), (var), (arg), cuemu_width(__VA_ARGS__), __FILE__, __LINE__)
inline int cuemu_width(int width = 32) { return width; }
#define __shfl_sync(mask, var, ...) CUEMU_SHFL_ARGS(CUEMU_SHFL, mask, var, __VA_ARGS__)
#define __shfl_up_sync(mask, var, ...) CUEMU_SHFL_ARGS(CUEMU_SHFL_UP, mask, var, __VA_ARGS__)
#define __shfl_down_sync(mask, var, ...) CUEMU_SHFL_ARGS(CUEMU_SHFL_DOWN, mask, var, __VA_ARGS__)
#define __shfl_xor_sync(mask, var, ...) CUEMU_SHFL_ARGS(CUEMU_SHFL_XOR, mask, var, __VA_ARGS__)

template <typename T> inline T __ldg(const T* p) { return *p; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }

// CUDA's min / max overloads: both arguments converted to their common type first.
template <typename A, typename B>
inline auto min(A a, B b) -> decltype(a + b) { return b < a ? (decltype(a + b))b : (decltype(a + b))a; }
template <typename A, typename B>
inline auto max(A a, B b) -> decltype(a + b) { return a < b ? (decltype(a + b))b : (decltype(a + b))a; }

// Atomics as real atomics, so ThreadSanitizer tells them from plain read-modify-writes.
template <typename T> struct cuemu_same { typedef T type; };     // the value takes the pointer's type
template <typename T> inline T atomicAdd(T* p, typename cuemu_same<T>::type v)
{ return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
template <typename T> inline T atomicOr(T* p, typename cuemu_same<T>::type v)
{ return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
template <typename T> inline T atomicAnd(T* p, typename cuemu_same<T>::type v)
{ return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }
template <typename T> inline T atomicMax(T* p, typename cuemu_same<T>::type v)
{
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
