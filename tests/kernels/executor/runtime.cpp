// The CPU executor of CUDA kernels: every CUDA thread of a launch is a fiber, and a warp
// intrinsic completes only when every lane named in its mask has arrived at the same call site.
//
// A launch runs its blocks one batch at a time (one block, or the whole grid for ThreadSanitizer so
// that no two CUDA threads share a TSan thread). Within a batch the fibers run in the schedule's order
// (forward, reversed or shuffled) until each waits at a warp intrinsic or exits; then every waiting
// warp group is checked and completed, and the round repeats. The launch fails, naming file, line,
// block and lane, when a named lane has exited, waits at another call site or with another mask, lies
// past the end of a partial warp, or a shuffle reads a lane its mask does not name.
//
// Never instrumented by ThreadSanitizer (the build leaves this file out): the bookkeeping below is
// shared by fibers on purpose, and only the kernels' own accesses are checked. Fiber switches are
// announced to AddressSanitizer and ThreadSanitizer (their fiber APIs).
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cuda_shim.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#endif
#if defined(CUEMU_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

// The context switch: a few instructions on x86-64 (ucontext's swapcontext makes two system calls per
// switch, for the signal mask, and dominated the run time); ucontext elsewhere.
#if defined(__x86_64__) && !defined(CUEMU_UCONTEXT)
extern "C" void cuemu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .globl cuemu_switch
    .type cuemu_switch, @function
cuemu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuemu_switch, .-cuemu_switch
)");
struct Context { void* sp = nullptr; };
static void context_switch(Context* from, Context* to) { cuemu_switch(&from->sp, to->sp); }
static void context_make(Context* c, char* stack, size_t size, void (*entry)())
{
    uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;                         // entry's return address: it never returns
    *--sp = (void*)entry;                    // where the first switch "returns" to
    for (int i = 0; i < 6; ++i) *--sp = nullptr;    // rbp rbx r12 r13 r14 r15
    unsigned int control[2];
    asm volatile("stmxcsr %0" : "=m"(control[0]));
    asm volatile("fnstcw %0" : "=m"(control[1]));
    sp -= 1;
    memcpy(sp, control, 8);
    c->sp = sp;
}
#else
struct Context { ucontext_t uc; };
static void context_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
static void context_make(Context* c, char* stack, size_t size, void (*entry)())
{
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, entry, 0);
}
#endif

namespace {

enum State { RUNNABLE, WAITING, EXITED };
const char* const OP_NAMES[] = {"__ballot_sync", "__any_sync", "__all_sync", "__shfl_sync",
                                "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync", "__syncwarp"};

struct Fiber {
    Context ctx;
    char* stack = nullptr;
    size_t stack_size = 0;
    CuemuBuiltins b{};
    int warp = 0, lane = 0, warp_lanes = 32;    // warp_lanes < 32: the block's last, partial warp
    Fiber** warp_fibers = nullptr;               // the 32 (or fewer) fibers of this warp, by lane
    State state = RUNNABLE;
    int op = 0, arg = 0, width = 32, line = 0;
    unsigned int mask = 0;
    unsigned long long value = 0, result = 0;
    const char* file = "";
    void* fake_stack = nullptr;
    void* tsan = nullptr;
    void* sync = nullptr;                        // the warp's __syncwarp sync object (TSan)
};

typedef void (*Entry)(void** args);

struct Launch {
    Entry fn = nullptr;
    void** args = nullptr;
    Context sched;
    void* sched_fake = nullptr;
    const void* sched_bottom = nullptr;
    size_t sched_size = 0;
    void* sched_tsan = nullptr;
    char* error = nullptr;
    int error_len = 0;
    bool failed = false;
    bool used_warp = false;
    unsigned long long done_sync = 0;
};

thread_local Launch* g_launch = nullptr;
thread_local Fiber* g_fiber = nullptr;

void fail(const char* fmt, ...)
{
    Launch* L = g_launch;
    if (L->failed) return;
    L->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->error, L->error_len, fmt, ap);
    va_end(ap);
}

void to_scheduler(Fiber* f, bool exiting)
{
    Launch* L = g_launch;
#ifdef CUEMU_ASAN
    __sanitizer_start_switch_fiber(exiting ? nullptr : &f->fake_stack, L->sched_bottom, L->sched_size);
#endif
#ifdef CUEMU_TSAN
    if (exiting) __tsan_release(&L->done_sync);
    __tsan_switch_to_fiber(L->sched_tsan, __tsan_switch_to_fiber_no_sync);   // no happens-before
#endif
    context_switch(&f->ctx, &L->sched);
#ifdef CUEMU_ASAN
    __sanitizer_finish_switch_fiber(f->fake_stack, nullptr, nullptr);
#endif
    (void)exiting;
}

void fiber_main()
{
    Fiber* f = g_fiber;
#ifdef CUEMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_launch->sched_bottom, &g_launch->sched_size);
#endif
    g_launch->fn(g_launch->args);
    f->state = EXITED;
    to_scheduler(f, true);
    abort();                                     // never resumed
}

void resume(Fiber* f)
{
    Launch* L = g_launch;
    g_fiber = f;
#ifdef CUEMU_ASAN
    __sanitizer_start_switch_fiber(&L->sched_fake, f->stack, f->stack_size);
#endif
#ifdef CUEMU_TSAN
    __tsan_switch_to_fiber(f->tsan, 0);          // the launch's inputs happen before every thread
#endif
    context_switch(&L->sched, &f->ctx);
#ifdef CUEMU_ASAN
    __sanitizer_finish_switch_fiber(L->sched_fake, nullptr, nullptr);
#endif
    g_fiber = nullptr;
}

void describe(Fiber* f, char* out, size_t n)
{
    snprintf(out, n, "%s:%d: %s in block (%u,%u,%u), warp %d, lane %d", f->file, f->line, OP_NAMES[f->op],
             f->b.block.x, f->b.block.y, f->b.block.z, f->warp, f->lane);
}

// Complete the group of a waiting lane if every lane its mask names waits at the same call site with
// the same mask; otherwise fail the launch with the reason.
void try_complete(Fiber* f)
{
    char where[512];
    const unsigned int mask = f->mask;
    if (!((mask >> f->lane) & 1u)) {
        describe(f, where, sizeof where);
        return fail("%s: mask 0x%08x does not name the calling lane", where, mask);
    }
    for (int j = 0; j < 32; ++j) {
        if (!((mask >> j) & 1u)) continue;
        if (j >= f->warp_lanes) {
            describe(f, where, sizeof where);
            return fail("%s: mask 0x%08x names lane %d, past the end of a partial warp of %d lanes", where,
                        mask, j, f->warp_lanes);
        }
        Fiber* g = f->warp_fibers[j];
        if (g->state == EXITED) {
            describe(f, where, sizeof where);
            return fail("%s: mask 0x%08x names lane %d, which has exited", where, mask, j);
        }
        if (g->state != WAITING) {
            describe(f, where, sizeof where);
            return fail("%s: mask 0x%08x names lane %d, which never arrived", where, mask, j);
        }
        if (g->file != f->file || g->line != f->line || g->op != f->op) {
            if (strcmp(g->file, f->file) != 0 || g->line != f->line || g->op != f->op) {
                describe(f, where, sizeof where);
                return fail("%s: mask 0x%08x names lane %d, which waits at %s:%d (%s)", where, mask, j,
                            g->file, g->line, OP_NAMES[g->op]);
            }
        }
        if (g->mask != mask || g->width != f->width) {
            describe(f, where, sizeof where);
            return fail("%s: lane %d waits here with mask 0x%08x width %d, this lane with 0x%08x width %d",
                        where, j, g->mask, g->width, mask, f->width);
        }
    }
    const int width = f->width;
    if (width < 1 || width > 32 || (width & (width - 1))) {
        describe(f, where, sizeof where);
        return fail("%s: width %d is not a power of two up to 32", where, width);
    }
    unsigned long long votes = 0;
    for (int j = 0; j < 32; ++j)
        if ((mask >> j) & 1u) votes |= (unsigned long long)(f->warp_fibers[j]->value & 1u) << j;
    for (int j = 0; j < 32; ++j) {
        if (!((mask >> j) & 1u)) continue;
        Fiber* g = f->warp_fibers[j];
        const int base = j & ~(width - 1);
        int src = j;
        switch (f->op) {
        case CUEMU_BALLOT: g->result = votes; break;
        case CUEMU_ANY: g->result = votes != 0; break;
        case CUEMU_ALL: g->result = votes == mask; break;
        case CUEMU_SYNCWARP: g->result = 0; break;
        case CUEMU_SHFL: src = base + (g->arg & (width - 1)); break;
        case CUEMU_SHFL_UP: src = j - g->arg >= base ? j - g->arg : j; break;
        case CUEMU_SHFL_DOWN: src = j + g->arg < base + width ? j + g->arg : j; break;
        case CUEMU_SHFL_XOR: src = (j ^ g->arg) < base + width ? (j ^ g->arg) : j; break;
        }
        if (f->op >= CUEMU_SHFL && f->op <= CUEMU_SHFL_XOR) {
            if (src < 0 || src > 31 || !((mask >> src) & 1u)) {
                describe(g, where, sizeof where);
                return fail("%s: reads lane %d, which mask 0x%08x does not name", where, src, mask);
            }
            g->result = f->warp_fibers[src]->value;
        }
    }
    for (int j = 0; j < 32; ++j)
        if ((mask >> j) & 1u) f->warp_fibers[j]->state = RUNNABLE;
}

}  // namespace

extern "C" {

const CuemuBuiltins* cuemu_builtins()
{
    return &g_fiber->b;
}

unsigned long long cuemu_warp_op(int op, unsigned int mask, unsigned long long value, int arg, int width,
                                 const char* file, int line)
{
    Fiber* f = g_fiber;
    g_launch->used_warp = true;
    f->op = op;
    f->mask = mask;
    f->value = value;
    f->arg = arg;
    f->width = width;
    f->file = file;
    f->line = line;
    f->state = WAITING;
#ifdef CUEMU_TSAN
    if (op == CUEMU_SYNCWARP) __tsan_release(f->sync);     // __syncwarp orders memory; the others do not
#endif
    to_scheduler(f, false);
#ifdef CUEMU_TSAN
    if (op == CUEMU_SYNCWARP) __tsan_acquire(f->sync);
#endif
    return f->result;
}

void* cuemu_alloc(size_t n) { return malloc(n ? n : 1); }
void cuemu_free(void* p) { free(p); }

// Run one launch. order: 0 forward, 1 reversed, 2 shuffled (by seed). batch_all: all blocks' threads
// as fibers at once (ThreadSanitizer), else one block at a time. Returns 0, or 1 with the reason in
// error. *used_warp is set when any warp intrinsic ran.
int cuemu_launch(Entry fn, void** args, const unsigned int* grid, const unsigned int* block, int order,
                 unsigned long long seed, int batch_all, size_t stack_size, char* error, int error_len,
                 int* used_warp)
{
    Launch L;
    L.fn = fn;
    L.args = args;
    L.error = error;
    L.error_len = error_len;
    error[0] = 0;
    Launch* saved_launch = g_launch;
    g_launch = &L;
#ifdef CUEMU_TSAN
    L.sched_tsan = __tsan_get_current_fiber();
#endif
    const unsigned long long nb = (unsigned long long)grid[0] * grid[1] * grid[2];
    const int threads = (int)(block[0] * block[1] * block[2]);
    const int warps = (threads + 31) / 32;
    std::vector<unsigned long long> blocks(nb);
    for (unsigned long long i = 0; i < nb; ++i) blocks[i] = i;
    std::mt19937_64 rng(seed);
    if (order == 1) std::reverse(blocks.begin(), blocks.end());
    if (order == 2) std::shuffle(blocks.begin(), blocks.end(), rng);
    const unsigned long long per_batch = batch_all ? nb : 1;
    const size_t batch_threads = (size_t)per_batch * threads;
    std::vector<Fiber> fibers(batch_threads);
    std::vector<Fiber*> lanes((size_t)per_batch * warps * 32, nullptr);
    std::vector<unsigned long long> warp_sync((size_t)per_batch * warps);
    // Stacks are kept for the next launch: allocating them (ASan poisons each) cost more than the runs.
    static thread_local std::vector<char*> pool;
    static thread_local size_t pool_size = 0;
    if (pool_size != stack_size) {
        for (char* p : pool) free(p);
        pool.clear();
        pool_size = stack_size;
    }
    while (pool.size() < fibers.size()) pool.push_back((char*)malloc(stack_size));
    for (size_t i = 0; i < fibers.size(); ++i) {
        fibers[i].stack_size = stack_size;
        fibers[i].stack = pool[i];
    }
    std::vector<size_t> run(batch_threads);
    for (unsigned long long b0 = 0; b0 < nb && !L.failed; b0 += per_batch) {
        const size_t in_batch = (size_t)std::min(per_batch, nb - b0) * threads;
        for (size_t i = 0; i < in_batch; ++i) {
            Fiber& f = fibers[i];
            const unsigned long long bid = blocks[b0 + i / threads];
            const int tid = (int)(i % threads);
            f.b.block = {(unsigned)(bid % grid[0]), (unsigned)(bid / grid[0] % grid[1]),
                            (unsigned)(bid / grid[0] / grid[1])};
            f.b.thread = {(unsigned)(tid % block[0]), (unsigned)(tid / block[0] % block[1]),
                             (unsigned)(tid / block[0] / block[1])};
            f.b.block_dim = {block[0], block[1], block[2]};
            f.b.grid_dim = {grid[0], grid[1], grid[2]};
            f.warp = tid / 32;
            f.lane = tid % 32;
            f.warp_lanes = std::min(32, threads - f.warp * 32);
            f.warp_fibers = &lanes[(i / threads * warps + f.warp) * 32];
            f.warp_fibers[f.lane] = &f;
            f.sync = &warp_sync[i / threads * warps + f.warp];
            f.state = RUNNABLE;
#ifdef CUEMU_ASAN
            ASAN_UNPOISON_MEMORY_REGION(f.stack, f.stack_size);   // an aborted launch leaves frames
#endif
            context_make(&f.ctx, f.stack, f.stack_size, fiber_main);
#ifdef CUEMU_TSAN
            f.tsan = __tsan_create_fiber(0);
#endif
            run[i] = i;
        }
        if (order == 1) std::reverse(run.begin(), run.begin() + in_batch);
        if (order == 2) std::shuffle(run.begin(), run.begin() + in_batch, rng);
        for (;;) {
            bool alive = false;
            for (size_t k = 0; k < in_batch && !L.failed; ++k) {
                Fiber* f = &fibers[run[k]];
                while (f->state == RUNNABLE && !L.failed) resume(f);
                alive |= f->state != EXITED;
            }
            if (L.failed || !alive) break;
            for (size_t k = 0; k < in_batch && !L.failed; ++k) {
                Fiber* f = &fibers[run[k]];
                if (f->state == WAITING) try_complete(f);
            }
            if (L.failed) break;
        }
#ifdef CUEMU_TSAN
        for (size_t i = 0; i < in_batch; ++i) __tsan_destroy_fiber(fibers[i].tsan);
#endif
    }
#ifdef CUEMU_TSAN
    if (L.failed) {            // threads left waiting never release: freeing their memory would "race"
        printf("%s\n", error);
        fflush(stdout);
        _exit(3);
    }
    __tsan_acquire(&L.done_sync);                // every thread's writes happen before the results are read
#endif
#ifdef CUEMU_ASAN
    for (auto& f : fibers) ASAN_UNPOISON_MEMORY_REGION(f.stack, f.stack_size);
#endif
    *used_warp = L.used_warp;
    g_launch = saved_launch;
    return L.failed ? 1 : 0;
}

}  // extern "C"
