// Per-candidate verification: how many cells are on over the whole run [a, b] and off over the
// margins [lo, a) and (b, hi) -- the popcount of (AND of the run's bits) & ~(OR of the margins' bits).
//
// inter_counts works on the step-major words of the selected cells (steps.cu); active_counts on the
// cell-major packed masks of all D cells (threshold.cu). Candidates are given as int64 arrays;
// lo <= a <= b < hi always holds.

#define FULL_MASK 0xffffffffu

// One warp per candidate: the lanes stride over the run and its margins (coalesced reads of
// consecutive steps), then AND / OR across the warp. Launch precondition: blockDim.x a multiple of 32
// (the shuffles name all 32 lanes; kernels.check_launch asserts it).
extern "C" __global__ void inter_counts(const unsigned int* __restrict__ words, int W,
                                        const long long* __restrict__ a,
                                        const long long* __restrict__ b,
                                        const long long* __restrict__ lo,
                                        const long long* __restrict__ hi, long long n_cand,
                                        int* __restrict__ out)
{
    const int lane = threadIdx.x & 31;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    for (long long c = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5; c < n_cand;
         c += warps) {
        const long long s = a[c], e = b[c] + 1, l = lo[c], h = hi[c];
        int total = 0;
        for (int w = 0; w < W; ++w) {
            unsigned int all = FULL_MASK, any = 0u;
            for (long long t = s + lane; t < e; t += 32) all &= words[t * W + w];
            for (long long t = l + lane; t < s; t += 32) any |= words[t * W + w];
            for (long long t = e + lane; t < h; t += 32) any |= words[t * W + w];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) {
                all &= __shfl_xor_sync(FULL_MASK, all, off);
                any |= __shfl_xor_sync(FULL_MASK, any, off);
            }
            total += __popc(all & ~any);
        }
        if (lane == 0) out[c] = total;
    }
}

// Bits of the steps [from, to) that fall in the word holding steps base .. base+31.
__device__ __forceinline__ unsigned int span_bits(long long from, long long to, long long base)
{
    const long long s = max(from, base), e = min(to, base + 32);
    if (e <= s) return 0u;
    const int count = (int)(e - s);
    const unsigned int ones = count == 32 ? FULL_MASK : ((1u << count) - 1u);
    return ones << (int)(s - base);
}

// One warp per (candidate, group of 32 cells), one lane per cell: the lane walks the words of its
// cell's row that cover [lo, hi); the warp's ballot is the 32-cell word of A, counted by popcount.
// out must be zeroed first (groups add to it). Launch preconditions: blockDim.x a multiple of 32 (the
// ballot names all 32 lanes) and a 1-D grid (blockIdx.y is ignored, so a 2-D grid would add every
// count gridDim.y times); kernels.check_launch asserts both.
extern "C" __global__ void active_counts(const unsigned int* __restrict__ words, long long word_stride,
                                         int n_cells, const long long* __restrict__ a,
                                         const long long* __restrict__ b,
                                         const long long* __restrict__ lo,
                                         const long long* __restrict__ hi, long long n_cand,
                                         int* __restrict__ out)
{
    const int lane = threadIdx.x & 31;
    const long long groups = (n_cells + 31) / 32;
    const long long total = n_cand * groups;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    // The loop bound is the same for the 32 lanes of a warp, so every ballot has all of them.
    for (long long job = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5; job < total;
         job += warps) {
        const long long c = job / groups;
        const long long cell = (job - c * groups) * 32 + lane;
        bool ok = cell < n_cells;
        if (ok) {
            const long long s = a[c], e = b[c] + 1, l = lo[c], h = hi[c];
            const unsigned int* row = words + cell * word_stride;
            for (long long w = l >> 5; ok && w <= (h - 1) >> 5; ++w) {
                const long long base = w << 5;
                const unsigned int run = span_bits(s, e, base);
                const unsigned int margin = span_bits(l, s, base) | span_bits(e, h, base);
                const unsigned int x = __ldg(row + w);
                ok = (x & run) == run && (x & margin) == 0u;
            }
        }
        const unsigned int good = __ballot_sync(FULL_MASK, ok);
        if (lane == 0 && good) atomicAdd(out + c, __popc(good));
    }
}
