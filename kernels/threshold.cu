// Thresholding: order-preserving float keys -> bit-packed on-masks, and back to booleans for a few rows.
//
// Cell-major layout, shared with verify.cu. Row r of `keys` holds one cell's keys over all steps,
// `key_stride` keys apart; `key_stride` is a multiple of 32 and the padding holds key 0, which is never
// on. Word w of row r of `words` holds steps 32w .. 32w+31 of that cell: bit j is step 32w + j (the bit
// order of numpy.packbits(..., bitorder="little") read as little-endian uint32).

#define FULL_MASK 0xffffffffu

// One warp turns 512 contiguous bytes of one row into PER words: each lane loads 16 bytes (PER keys),
// so the warp's load is one coalesced 512-byte read, and PER ballots gather the bits of each word.
// Launch precondition: blockDim.x a multiple of 32 (the ballots name all 32 lanes of every warp;
// kernels.check_launch asserts it).
// row_thresholds, when not null, holds one threshold per row (per-cell scaled thresholds) and
// replaces `threshold`.
template <typename K>
__device__ __forceinline__ void pack_cells(const K* __restrict__ keys, long long key_stride,
                                           K threshold, const K* __restrict__ row_thresholds,
                                           unsigned int* __restrict__ words,
                                           long long word_stride, long long word_offset,
                                           long long n_words, int rows)
{
    constexpr int PER = 16 / sizeof(K);           // keys per lane, and words per warp step
    constexpr int LANES_PER_WORD = 32 / PER;
    const int lane = threadIdx.x & 31;
    const long long chunks_per_row = (n_words + PER - 1) / PER;
    const long long total = chunks_per_row * rows;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    // The loop bound is the same for the 32 lanes of a warp, so every ballot has all of them.
    for (long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5; warp < total;
         warp += warps) {
        const long long row = warp / chunks_per_row;
        const long long first_word = (warp - row * chunks_per_row) * PER;
        const K th = row_thresholds != nullptr ? row_thresholds[row] : threshold;
        unsigned int mine = 0;                    // bit j: my key j is on
        if (first_word + lane / LANES_PER_WORD < n_words) {
            union { uint4 v; K k[PER]; } u;
            u.v = __ldg(reinterpret_cast<const uint4*>(keys + row * key_stride + first_word * 32) + lane);
#pragma unroll
            for (int j = 0; j < PER; ++j) mine |= (unsigned int)(u.k[j] >= th) << j;
        }
        // Word m, bit (r * PER + j) = bit j of lane (m * LANES_PER_WORD + r).
        unsigned int word = 0;
#pragma unroll
        for (int j = 0; j < PER; ++j) {
            const unsigned int ballot = __ballot_sync(FULL_MASK, (mine >> j) & 1u);
            const unsigned int lanes = ballot >> ((lane % PER) * LANES_PER_WORD);
#pragma unroll
            for (int r = 0; r < LANES_PER_WORD; ++r) word |= ((lanes >> r) & 1u) << (r * PER + j);
        }
        if (lane < PER && first_word + lane < n_words)
            words[row * word_stride + word_offset + first_word + lane] = word;
    }
}

extern "C" __global__ void pack_cells_u16(const unsigned short* keys, long long key_stride,
                                          unsigned short threshold, unsigned int* words,
                                          long long word_stride, long long word_offset,
                                          long long n_words, int rows)
{
    pack_cells<unsigned short>(keys, key_stride, threshold, nullptr, words, word_stride, word_offset, n_words,
                               rows);
}

extern "C" __global__ void pack_cells_u32(const unsigned int* keys, long long key_stride,
                                          unsigned int threshold, unsigned int* words,
                                          long long word_stride, long long word_offset,
                                          long long n_words, int rows)
{
    pack_cells<unsigned int>(keys, key_stride, threshold, nullptr, words, word_stride, word_offset, n_words,
                             rows);
}

extern "C" __global__ void pack_cells_u64(const unsigned long long* keys, long long key_stride,
                                          unsigned long long threshold, unsigned int* words,
                                          long long word_stride, long long word_offset,
                                          long long n_words, int rows)
{
    pack_cells<unsigned long long>(keys, key_stride, threshold, nullptr, words, word_stride, word_offset,
                                   n_words, rows);
}

// pack_cells_* with one threshold key per row: row r (cell r) is on where keys >= thresholds[r].
extern "C" __global__ void pack_cells_rows_u16(const unsigned short* keys, long long key_stride,
                                               const unsigned short* thresholds, unsigned int* words,
                                               long long word_stride, long long word_offset,
                                               long long n_words, int rows)
{
    pack_cells<unsigned short>(keys, key_stride, 0, thresholds, words, word_stride, word_offset, n_words,
                               rows);
}

extern "C" __global__ void pack_cells_rows_u32(const unsigned int* keys, long long key_stride,
                                               const unsigned int* thresholds, unsigned int* words,
                                               long long word_stride, long long word_offset,
                                               long long n_words, int rows)
{
    pack_cells<unsigned int>(keys, key_stride, 0, thresholds, words, word_stride, word_offset, n_words,
                             rows);
}

extern "C" __global__ void pack_cells_rows_u64(const unsigned long long* keys, long long key_stride,
                                               const unsigned long long* thresholds, unsigned int* words,
                                               long long word_stride, long long word_offset,
                                               long long n_words, int rows)
{
    pack_cells<unsigned long long>(keys, key_stride, 0, thresholds, words, word_stride, word_offset,
                                   n_words, rows);
}

// Booleans (n_cells, T), row i = cell cells[i], from the packed rows. One thread per output byte, so
// each warp writes 32 contiguous bytes; the 32 threads of one word read it together (one broadcast).
extern "C" __global__ void unpack_cells(const unsigned int* __restrict__ words, long long word_stride,
                                        const long long* __restrict__ cells, int n_cells, long long T,
                                        bool* __restrict__ out)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (int i = blockIdx.y; i < n_cells; i += gridDim.y) {
        const unsigned int* row = words + cells[i] * word_stride;
        bool* dst = out + (long long)i * T;
        for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < T; t += stride)
            dst[t] = (row[t >> 5] >> (t & 31)) & 1u;
    }
}
