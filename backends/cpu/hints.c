/* Prefetch hints of the CPU backend: the workers prefetch the next product's weights while they
 * wait.
 *
 * A decode step runs the same products in the same order every token, and between two of them
 * the workers wait through the caller's serial work (norms, conversions, rope, residual adds,
 * the graph itself) with nothing to read. The backend remembers the order of a step's products
 * and the weight rows each thread started each one on; entering a product, it hints every
 * worker at its own first rows of the next product, and worker 1 at the caller's too, which it
 * is too busy to fetch. A worker prefetches them once it is done with the current product
 * (hs__pool_hint). matmul.c says where each thread of a product starts. */
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/cpu-impl.h"
#include "common/log.h"

void hs__cpu_hints_init(struct hs_cpu_backend *cpu)
{
    /* HS_CPU_HINT_KB KiB (0: none) of each span a worker prefetches.
     * SmolLM-135M tg128 on the 2-thread Zen 5 VM, 10 interleaved pairs, medians without -> with
     * 128: Q4_K_M 327.9 -> 371.2 t/s (8 pairs of 10 faster), on the AVX2 path 301.6 -> 317.1
     * (8); Q8_0 242.4 -> 249.1 (7), AVX2 263.8 -> 268.3 (5). 64 and 256 measured between. */
    const char *hint_env = getenv("HS_CPU_HINT_KB");
    long hint_kb = HS__CPU_HINT_KB;
    if (hint_env && *hint_env) {
        char *end = NULL;
        const long v = strtol(hint_env, &end, 10);
        if (*end != '\0' || v < 0) {
            HS_LOG_WARN("HS_CPU_HINT_KB=%s is not a number of KiB (0: none): ignored (using %d)",
                        hint_env, HS__CPU_HINT_KB);
        } else {
            hint_kb = v;
        }
    }
    if (hint_kb > 0 && cpu->base.n_threads > 1) {
        cpu->hint_bytes = (size_t)HS_MIN(hint_kb, 1024) * 1024;
        cpu->hint_ops = calloc(HS__CPU_HINT_OPS, sizeof(*cpu->hint_ops)); /* NULL: no hints */
    }
}

/* Enters the product whose first weight's data is key into the step's order and hints the
 * workers at the next product's first rows, as the last step ran it; returns the product's
 * entry for hs__cpu_hint_fill, or NULL (no hints). */
struct hs__cpu_hint_op *hs__cpu_hint_enter(struct hs_cpu_backend *cpu, const void *key)
{
    if (!cpu->hint_ops) {
        return NULL;
    }
    int pos = cpu->hint_pos;
    if (pos >= cpu->hint_n || cpu->hint_ops[pos].key != key) {
        if (cpu->hint_n > 0 && cpu->hint_ops[0].key == key) {
            pos = 0; /* the next step */
        } else if (pos < HS__CPU_HINT_OPS) {
            /* not where the last step had it: remember it there, and forget the rest */
            memset(&cpu->hint_ops[pos], 0, sizeof(cpu->hint_ops[pos]));
            cpu->hint_ops[pos].key = key;
            cpu->hint_n = pos + 1;
        } else {
            return NULL;
        }
    }
    cpu->hint_pos = pos + 1;
    const struct hs__cpu_hint_op *next = &cpu->hint_ops[pos + 1 < cpu->hint_n ? pos + 1 : 0];
    const int nth = HS_MIN(hs__pool_n_threads(cpu->pool), HS__CPU_HINT_THREADS);
    for (int i = 1; i < nth; i++) {
        struct hs__pool_span sp[4] = {next->first[i][0], next->first[i][1]};
        if (i == 1) {
            sp[2] = next->first[0][0];
            sp[3] = next->first[0][1];
        }
        for (int k = 0; k < 4; k++) {
            sp[k].n = HS_MIN(sp[k].n, cpu->hint_bytes);
        }
        hs__pool_hint(cpu->pool, i, sp, 4);
    }
    return &cpu->hint_ops[pos];
}

/* Records the weight rows thread ith starts h's product on (b may be empty). */
void hs__cpu_hint_fill(struct hs__cpu_hint_op *h, int ith, struct hs__pool_span a,
                       struct hs__pool_span b)
{
    if (h && ith < HS__CPU_HINT_THREADS) {
        h->first[ith][0] = a;
        h->first[ith][1] = b;
    }
}
