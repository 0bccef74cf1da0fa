// The statistics' corpus scans over the cell-major packed masks of threshold.cu (bit j of word w of a
// cell's row = step 32w + j; padding bits past T are 0).

#define FULL_MASK 0xffffffffu

// Per cell: how many steps it is on (the popcount of its row's first n_words words) and how many of
// those fall in the target (popcount of row & target, the target packed like a row). One warp per
// cell: the lanes stride over the row (coalesced), then a shuffle sum; lane 0 writes both counts, so
// no output needs zeroing. Launch precondition: blockDim.x a multiple of 32 (the shuffles name all 32
// lanes; kernels.check_launch asserts it).
extern "C" __global__ void cell_on_counts(const unsigned int* __restrict__ words, long long word_stride,
                                          long long n_words, int n_cells,
                                          const unsigned int* __restrict__ target,
                                          long long* __restrict__ inside, long long* __restrict__ total)
{
    const int lane = threadIdx.x & 31;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    // The loop bound is the same for the 32 lanes of a warp, so every shuffle has all of them.
    for (long long cell = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5; cell < n_cells;
         cell += warps) {
        const unsigned int* row = words + cell * word_stride;
        long long in = 0, all = 0;
        for (long long w = lane; w < n_words; w += 32) {
            const unsigned int x = __ldg(row + w);
            all += __popc(x);
            in += __popc(x & __ldg(target + w));
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            all += __shfl_xor_sync(FULL_MASK, all, off);
            in += __shfl_xor_sync(FULL_MASK, in, off);
        }
        if (lane == 0) {
            inside[cell] = in;
            total[cell] = all;
        }
    }
}
