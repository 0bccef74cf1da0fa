// Kernels for the executor's own tests (tests/kernels/test_executor.py): one correct user of every warp
// intrinsic, and one kernel per fault the executor must report. Never loaded by the backend.

#define FULL_MASK 0xffffffffu

// out[t] (8 ints per thread): the intrinsics' results for thread t, input x[t].
extern "C" __global__ void intrinsics(const int* __restrict__ x, int* __restrict__ out)
{
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = x[t];
    int* o = out + 8 * t;
    o[0] = (int)__ballot_sync(FULL_MASK, v & 1);
    o[1] = __any_sync(FULL_MASK, v > 90);
    o[2] = __all_sync(FULL_MASK, v >= 0);
    o[3] = __shfl_sync(FULL_MASK, v, v & 31);
    o[4] = __shfl_up_sync(FULL_MASK, v, 3);
    o[5] = __shfl_down_sync(FULL_MASK, v, 5, 16);
    o[6] = __shfl_xor_sync(FULL_MASK, v, 9, 8);
    __syncwarp();
    // The even lanes only: a partial mask.
    o[7] = (threadIdx.x & 1) ? -1 : (int)__ballot_sync(0x55555555u, v & 2);
}

extern "C" __global__ void exited_lane(int* __restrict__ out)
{
    if (threadIdx.x == 3) return;
    out[blockIdx.x * blockDim.x + threadIdx.x] = (int)__ballot_sync(FULL_MASK, 1);
}

extern "C" __global__ void other_site(int* __restrict__ out)
{
    int x = threadIdx.x;
    if (threadIdx.x & 1)
        x = __shfl_xor_sync(FULL_MASK, x, 1);
    else
        x = __shfl_xor_sync(FULL_MASK, x, 1);
    out[blockIdx.x * blockDim.x + threadIdx.x] = x;
}

extern "C" __global__ void full_mask(int* __restrict__ out)
{
    out[blockIdx.x * blockDim.x + threadIdx.x] = (int)__ballot_sync(FULL_MASK, 1);
}

extern "C" __global__ void last_writer_wins(int* __restrict__ out)
{
    out[0] = blockIdx.x * blockDim.x + threadIdx.x;
}

extern "C" __global__ void skips_some(int n, int* __restrict__ out)
{
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += gridDim.x * blockDim.x)
        if (t % 7) out[t] = 1;
}

extern "C" __global__ void one_past_the_end(int n, int* __restrict__ out)
{
    for (int t = blockIdx.x * blockDim.x + threadIdx.x; t <= n; t += gridDim.x * blockDim.x)
        out[t] = 1;
}

extern "C" __global__ void racy_add(int* __restrict__ out)
{
    if ((threadIdx.x & 31) == 0) out[0] += 1;
}

extern "C" __global__ void atomic_add(int* __restrict__ out)
{
    if ((threadIdx.x & 31) == 0) atomicAdd(out, 1);
}
