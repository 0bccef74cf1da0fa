// Step-wise work over the k selected cells: their on-bits packed per step, the count n(t) of those
// on, and the edges of the maximal runs of n(t) >= level.
//
// Step-major words: `words` is (T, W) uint32, W = ceil(k / 32); bit j of word w of step t is selected
// cell 32w + j. Bits past k are 0.

// on (k, T) bool, C order -> words (T, W). One thread per step: the reads of on[j, .] are coalesced.
extern "C" __global__ void pack_steps(const bool* __restrict__ on, int k, long long T,
                                      unsigned int* __restrict__ words, int W)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < T; t += stride) {
        for (int w = 0; w < W; ++w) {
            const int j1 = min(k, 32 * w + 32);
            unsigned int word = 0;
            for (int j = 32 * w; j < j1; ++j)
                word |= (unsigned int)on[(long long)j * T + t] << (j - 32 * w);
            words[t * W + w] = word;
        }
    }
}

#define FULL_MASK 0xffffffffu

// The step words of the selected cells straight from the cell-major packed masks of threshold.cu
// (row stride word_stride): bit j of words[t, w] is bit t of the row of cell cells[32w + j]; bits past
// k are 0. One warp per (32 steps, word): lane j loads cell 32w + j's mask word of those steps, and 32
// ballots transpose the 32 x 32 bits, lane s keeping step 32g + s. Launch precondition: blockDim.x a
// multiple of 32 (the ballots name all 32 lanes; kernels.check_launch asserts it).
extern "C" __global__ void gather_steps(const unsigned int* __restrict__ mask, long long word_stride,
                                        const long long* __restrict__ cells, int k, long long T,
                                        unsigned int* __restrict__ words, int W)
{
    const int lane = threadIdx.x & 31;
    const long long total = ((T + 31) >> 5) * W;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    // The loop bound is the same for the 32 lanes of a warp, so every ballot has all of them.
    for (long long job = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5; job < total;
         job += warps) {
        const long long g = job / W;
        const int w = (int)(job - g * W);
        const int j = 32 * w + lane;
        const unsigned int mine = j < k ? __ldg(mask + cells[j] * word_stride + g) : 0u;
        unsigned int word = 0;
        for (int s = 0; s < 32; ++s) {
            const unsigned int bits = __ballot_sync(FULL_MASK, (mine >> s) & 1u);
            if (s == lane) word = bits;
        }
        const long long t = 32 * g + lane;
        if (t < T) words[t * W + w] = word;
    }
}

// n(t) = popcount of the step's words.
extern "C" __global__ void step_counts(const unsigned int* __restrict__ words, int W, long long T,
                                       int* __restrict__ n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < T; t += stride) {
        int count = 0;
        for (int w = 0; w < W; ++w) count += __popc(words[t * W + w]);
        n[t] = count;
    }
}

// flags[t]: bit 0 when a maximal run of n >= level starts at t, bit 1 when one ends at t. Runs are
// cut at sequence starts: seq_start[t] != 0 when a sequence starts at t (read only when has_seq).
extern "C" __global__ void level_edges(const int* __restrict__ n,
                                       const unsigned char* __restrict__ seq_start, int has_seq,
                                       int level, long long T, unsigned char* __restrict__ flags)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < T; t += stride) {
        unsigned char f = 0;
        if (n[t] >= level) {
            const bool first = t == 0 || n[t - 1] < level || (has_seq && seq_start[t]);
            const bool last = t == T - 1 || n[t + 1] < level || (has_seq && seq_start[t + 1]);
            f = (unsigned char)(first | (last << 1));
        }
        flags[t] = f;
    }
}
