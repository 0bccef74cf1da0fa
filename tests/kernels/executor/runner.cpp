// One launch in its own process, for ThreadSanitizer (which does not work preloaded into Python).
//
//   runner SPEC     SPEC lines: kernel NAME / grid X Y Z / block X Y Z / order ORDER SEED /
//                   then per argument "scalar HEX" (its bytes) or "buffer NBYTES FILE"
//
// Buffers are read from their files into exact-size allocations and written back after the launch.
// Exit 0, or 3 with the executor's reason on stdout (TSan itself exits 66 on a race).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_shim.h"

extern "C" {
struct CuemuKernel { const char* name; void (*fn)(void**); };
extern const CuemuKernel cuemu_kernels[];
int cuemu_launch(void (*fn)(void**), void** args, const unsigned int* grid, const unsigned int* block,
                 int order, unsigned long long seed, int batch_all, size_t stack_size, char* error,
                 int error_len, int* used_warp);
}

int main(int argc, char** argv)
{
    if (argc != 2) { fprintf(stderr, "usage: runner SPEC\n"); return 2; }
    FILE* spec = fopen(argv[1], "r");
    if (!spec) { perror(argv[1]); return 2; }
    char name[256], kind[32];
    unsigned int grid[3], block[3];
    int order;
    unsigned long long seed;
    if (fscanf(spec, "kernel %255s grid %u %u %u block %u %u %u order %d %llu", name, &grid[0], &grid[1],
               &grid[2], &block[0], &block[1], &block[2], &order, &seed) != 9) {
        fprintf(stderr, "%s: bad header\n", argv[1]);
        return 2;
    }
    std::vector<void*> storage;          // per argument: the scalar's bytes, or the buffer's pointer
    std::vector<std::pair<std::string, size_t>> files;
    std::vector<void*> buffers;
    while (fscanf(spec, "%31s", kind) == 1) {
        if (!strcmp(kind, "scalar")) {
            char hex[64];
            if (fscanf(spec, "%63s", hex) != 1) return 2;
            unsigned char* bytes = (unsigned char*)calloc(1, 16);
            for (size_t i = 0; hex[2 * i] && hex[2 * i + 1] && i < 16; ++i) sscanf(hex + 2 * i, "%2hhx", &bytes[i]);
            storage.push_back(bytes);
            files.push_back({"", 0});
            buffers.push_back(nullptr);
        } else {
            size_t n;
            char path[4096];
            if (fscanf(spec, "%zu %4095s", &n, path) != 2) return 2;
            void* buf = malloc(n ? n : 1);
            FILE* f = fopen(path, "rb");
            if (!f || fread(buf, 1, n, f) != n) { fprintf(stderr, "%s: short read\n", path); return 2; }
            fclose(f);
            void** holder = (void**)malloc(sizeof(void*));
            *holder = buf;
            storage.push_back(holder);
            files.push_back({path, n});
            buffers.push_back(buf);
        }
    }
    fclose(spec);
    void (*fn)(void**) = nullptr;
    for (const CuemuKernel* k = cuemu_kernels; k->name; ++k)
        if (!strcmp(k->name, name)) fn = k->fn;
    if (!fn) { fprintf(stderr, "no kernel %s\n", name); return 2; }
    char error[2048];
    int used = 0;
    const int rc = cuemu_launch(fn, storage.data(), grid, block, order, seed, 1, 256 << 10, error,
                                sizeof error, &used);
    if (rc) { printf("%s\n", error); return 3; }
    printf("used_warp=%d\n", used);
    for (size_t i = 0; i < files.size(); ++i) {
        if (!buffers[i]) continue;
        FILE* f = fopen(files[i].first.c_str(), "wb");
        if (!f || fwrite(buffers[i], 1, files[i].second, f) != files[i].second) return 2;
        fclose(f);
    }
    return 0;
}
