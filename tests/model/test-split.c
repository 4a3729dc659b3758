/* Split execution (model/forward.c): decode attention on a second CPU backend with its own
 * thread and cores, KV in two stores, sub-batch ping-pong, and KV blocks migrating between the
 * stores mid-generation, give the same logits, bit for bit, as the unsplit pass on every model
 * in ../shared/models and on a cross-layer-attention model. The same with the simulated PIM
 * backend for attention: its rank-by-rank computation puts each (sequence, KV head) on one rank
 * (one partial, finalised with the CPU's own last step), so it keeps every bit too, and it
 * charges simulated time. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"

#define N_SEQ    6
#define BLOCK    8
#define MAX_BLK  8 /* per sequence: 64 positions */
#define N_DECODE 12

struct pair {
    struct hs_model *m;
    struct hs_context *mono;  /* not split */
    struct hs_context *split; /* two CPU backends, ping-pong */
};

/* attn: the attention backend's name ("cpu": a second CPU backend). */
static void make_pair(struct pair *p, const char *path, bool pingpong, enum hs_type kv_type,
                      const char *attn)
{
    struct hs_error err = {0};
    cr_assert_eq(hs_model_load(path, &p->m, &err), HS_OK, "%s: %s", path, err.message);
    struct hs_context_params cp = hs_context_default_params();
    cp.n_ctx = MAX_BLK * BLOCK;
    cp.block_size = BLOCK;
    cp.n_batch = 256;
    cp.n_seq_max = N_SEQ;
    cp.kv_type = kv_type;
    cp.backend_params.n_threads = 1;
    cr_assert_eq(hs_context_create(p->m, &cp, &p->mono, &err), HS_OK, "%s", err.message);
    cp.attn_threads = 1;
    cp.attn_backend = attn;
    cp.pingpong = pingpong;
    cp.n_kv_blocks_ffn = N_SEQ * MAX_BLK;
    cp.n_kv_blocks = N_SEQ * MAX_BLK;
    cr_assert_eq(hs_context_create(p->m, &cp, &p->split, &err), HS_OK, "%s", err.message);
    cr_assert_eq(hs_context_n_stores(p->mono), 1);
    cr_assert_eq(hs_context_n_stores(p->split), 2);
    cr_assert_neq(hs_context_attn_backend(p->split), hs_context_backend(p->split));
    cr_assert_str_eq(hs_backend_name(hs_context_attn_backend(p->split)), attn);
}

static void free_pair(struct pair *p)
{
    hs_context_destroy(p->mono);
    hs_context_destroy(p->split);
    hs_model_destroy(p->m);
}

static void expect_same_logits(const struct pair *p, const char *what, int step)
{
    const int32_t n = hs_context_n_logit_rows(p->mono);
    cr_assert_eq(hs_context_n_logit_rows(p->split), n);
    const size_t bytes = (size_t)n * (size_t)hs_model_hparams(p->m)->n_vocab * sizeof(float);
    cr_assert_eq(memcmp(hs_context_logits(p->mono), hs_context_logits(p->split), bytes), 0,
                 "%s: step %d: logits of the split pass differ", what, step);
}

static hs_token argmax(const float *l, int32_t n)
{
    hs_token best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (l[i] > l[best]) {
            best = i;
        }
    }
    return best;
}

/* Six sequences with prompts of different lengths, prefilled in one batch, then decoded
 * together; sequences 0, 1, 3, 5 decode on the attention backend (store 1), 2 and 4 on the FFN
 * backend (store 0) until step 4, when 2 migrates (its blocks are copied to store 1), and from
 * step 6 sequence 5 decodes with a 3-token chunk (a prefill row beside the decodes). */
static void run_pair(struct pair *p, const char *what)
{
    const int32_t n_vocab = hs_model_hparams(p->m)->n_vocab;
    static const int32_t lens[N_SEQ] = {5, 9, 17, 3, 11, 2};
    int32_t store[N_SEQ] = {1, 1, 0, 1, 0, 1};
    hs_token toks[N_SEQ][MAX_BLK * BLOCK];
    int32_t n_past[N_SEQ] = {0};
    int32_t mono_tab[N_SEQ][MAX_BLK];
    int32_t split_tab[N_SEQ][MAX_BLK];
    struct hs_rng rng;
    hs_rng_seed(&rng, 77);
    for (int s = 0; s < N_SEQ; s++) {
        for (int b = 0; b < MAX_BLK; b++) {
            /* scattered, and different in the two contexts */
            mono_tab[s][b] = b * N_SEQ + s;
            split_tab[s][b] = (N_SEQ * MAX_BLK - 1) - (s * MAX_BLK + b);
        }
        toks[s][0] = 1;
        for (int i = 1; i < lens[s]; i++) {
            toks[s][i] = (hs_token)(hs_rng_next(&rng) % (uint64_t)(n_vocab - 3)) + 3;
        }
    }
    struct hs_forward_seq fm[N_SEQ], fsp[N_SEQ];
    for (int s = 0; s < N_SEQ; s++) {
        fm[s] = (struct hs_forward_seq){.tokens = toks[s],
                                        .n_tokens = lens[s],
                                        .n_past = 0,
                                        .block_table = mono_tab[s],
                                        .n_logits = 1};
        fsp[s] = fm[s];
        fsp[s].block_table = split_tab[s];
        fsp[s].store = store[s];
    }
    cr_assert_eq(hs_model_forward(p->mono, fm, N_SEQ), HS_OK);
    cr_assert_eq(hs_model_forward(p->split, fsp, N_SEQ), HS_OK);
    expect_same_logits(p, what, 0);
    int32_t n_tok[N_SEQ];
    for (int s = 0; s < N_SEQ; s++) {
        n_past[s] = lens[s];
        toks[s][n_past[s]] = argmax(hs_context_logits(p->mono) + (size_t)s * n_vocab, n_vocab);
        n_tok[s] = 1;
    }
    for (int step = 1; step <= N_DECODE; step++) {
        if (step == 4) {
            /* sequence 2 passes the long-context threshold: its blocks move to store 1 */
            const int32_t nb = (n_past[2] + BLOCK - 1) / BLOCK;
            int32_t dst[MAX_BLK];
            for (int b = 0; b < nb; b++) {
                dst[b] = split_tab[2][b] ^ 1; /* other block ids in the other store */
            }
            uint64_t bytes = 0;
            cr_assert_eq(hs_context_copy_blocks(p->split, 0, split_tab[2], 1, dst, nb, &bytes),
                         HS_OK);
            cr_assert_gt(bytes, 0);
            memcpy(split_tab[2], dst, sizeof(int32_t) * (size_t)nb);
            for (int b = nb; b < MAX_BLK; b++) {
                split_tab[2][b] ^= 1;
            }
            store[2] = 1;
        }
        if (step >= 6) {
            n_tok[5] = 3; /* a chunk of "prefill" beside the decodes */
            for (int i = 1; i < 3; i++) {
                toks[5][n_past[5] + i] = (hs_token)(3 + (step * 7 + i) % (n_vocab - 3));
            }
        }
        for (int s = 0; s < N_SEQ; s++) {
            fm[s] = (struct hs_forward_seq){.tokens = toks[s] + n_past[s],
                                            .n_tokens = n_tok[s],
                                            .n_past = n_past[s],
                                            .block_table = mono_tab[s],
                                            .n_logits = 1};
            fsp[s] = fm[s];
            fsp[s].block_table = split_tab[s];
            fsp[s].store = store[s];
        }
        cr_assert_eq(hs_model_forward(p->mono, fm, N_SEQ), HS_OK);
        cr_assert_eq(hs_model_forward(p->split, fsp, N_SEQ), HS_OK);
        expect_same_logits(p, what, step);
        for (int s = 0; s < N_SEQ; s++) {
            n_past[s] += n_tok[s];
            toks[s][n_past[s]] = argmax(hs_context_logits(p->mono) + (size_t)s * n_vocab, n_vocab);
        }
    }
}

static const char *models_dir(void)
{
    const char *d = getenv("HS_MODELS_DIR");
    return d ? d : "../shared/models";
}

/* Under valgrind (HS_VALGRIND; ~100 times slower) two models for each attention backend, the
 * six covering the llama, qwen2, qwen2moe and qwen3moe architectures and F32, F16, Q8_0 and
 * Q4_K weights. */
static bool valgrind_model(const char *attn, const char *name)
{
    static const char *const vg[][3] = {{"cpu", "stories260K.gguf", "moe-qwen2-mini-q8_0.gguf"},
                                        {"npu", "tiny-q4_k_m.gguf", "moe-qwen3-mini-q8_0.gguf"},
                                        {"pim", "qwen2-bpe-f32.gguf", "tiny-f16.gguf"}};
    for (size_t i = 0; i < sizeof(vg) / sizeof(vg[0]); i++) {
        if (!strcmp(vg[i][0], attn)) {
            return !strcmp(vg[i][1], name) || !strcmp(vg[i][2], name);
        }
    }
    return false;
}

/* Every model in ../shared/models, not split and split onto attention backend attn, with and
 * without ping-pong: the same logits bit for bit. */
static void every_shared_model(const char *attn)
{
    const bool vg = getenv("HS_VALGRIND") != NULL;
    DIR *dir = opendir(models_dir());
    cr_assert_not_null(dir, "no models directory at %s", models_dir());
    int n_models = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        const size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".gguf") != 0 ||
            (vg && !valgrind_model(attn, de->d_name))) {
            continue;
        }
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", models_dir(), de->d_name);
        for (int pp = 0; pp < 2; pp++) {
            struct pair p = {0};
            make_pair(&p, path, pp == 1, HS_TYPE_F16, attn);
            run_pair(&p, de->d_name);
            struct hs_backend_stats bs;
            hs_backend_get_stats(hs_context_attn_backend(p.split), &bs);
            cr_assert_str_eq(hs_backend_name(hs_context_attn_backend(p.split)), attn);
            /* the simulated backends charge time, a real one does not */
            cr_assert((bs.sim_time_s > 0) == (strcmp(attn, "cpu") != 0), "%s: sim time %g",
                      de->d_name, bs.sim_time_s);
            struct hs_split_stats ss;
            hs_context_get_split_stats(p.split, &ss);
            cr_assert_eq(ss.n_steps, N_DECODE + 1);
            if (pp == 1) {
                cr_assert_gt(ss.n_steps_split, 0, "%s: ping-pong never split the batch",
                             de->d_name);
            } else {
                cr_assert_eq(ss.n_steps_split, 0);
            }
            free_pair(&p);
        }
        n_models++;
    }
    closedir(dir);
    cr_assert_geq(n_models, vg ? 2 : 10, "found only %d models in %s", n_models, models_dir());
}

Test(split, every_shared_model_gives_the_unsplit_bits, .timeout = 600)
{
    every_shared_model("cpu");
}

/* The simulated NPU (backends/npu) as the attention backend: its attention is split over the
 * cores of a 6 x 6 chip, each core's share computed by the CPU kernels in partials mode and
 * merged; every (row, head) is one core's one partial of its whole range (the contexts here are
 * far below the chunking threshold), whose finalisation is the CPU op's last step, so the bits
 * are the unsplit pass's. */
Test(split, npu_attention_gives_the_unsplit_bits_on_every_shared_model, .timeout = 600)
{
    every_shared_model("npu");
}

/* The simulated DIMM-PIM (backends/pim): heads on one rank run normalised on it, so the same. */
Test(split, pim_attention_gives_the_unsplit_bits_on_every_shared_model, .timeout = 600)
{
    every_shared_model("pim");
}

/* Cross-layer attention (layers sharing another's K/V) and an f32 cache, on a generated model. */
Test(split, cross_layer_attention_and_f32_cache)
{
    struct hs_mkmodel_params mp = hs_mkmodel_hunyuan_large_params();
    char path[128];
    snprintf(path, sizeof(path), "/tmp/hs-test-split-%d.gguf", (int)getpid());
    struct hs_error err = {0};
    cr_assert_eq(hs_mkmodel_write(&mp, path, &err), HS_OK, "%s", err.message);
    struct pair p = {0};
    make_pair(&p, path, true, HS_TYPE_F32, "cpu");
    run_pair(&p, "hunyuan-large-tiny");
    free_pair(&p);
    unlink(path);
}

Test(split, copy_blocks_rejects_bad_ids)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/stories260K.gguf", models_dir());
    struct pair p = {0};
    make_pair(&p, path, false, HS_TYPE_F16, "cpu");
    const int32_t ok = 0, same = 0, big = N_SEQ * MAX_BLK, neg = -1;
    cr_assert_eq(hs_context_copy_blocks(p.split, 0, &ok, 1, &big, 1, NULL), HS_E_INVAL);
    cr_assert_eq(hs_context_copy_blocks(p.split, 0, &neg, 1, &ok, 1, NULL), HS_E_INVAL);
    cr_assert_eq(hs_context_copy_blocks(p.split, 0, &ok, 0, &same, 1, NULL), HS_E_INVAL);
    cr_assert_eq(hs_context_copy_blocks(p.split, 2, &ok, 1, &ok, 1, NULL), HS_E_INVAL);
    cr_assert_eq(hs_context_copy_blocks(p.mono, 0, &ok, 1, &ok, 1, NULL), HS_E_INVAL);
    uint64_t bytes = 1;
    cr_assert_eq(hs_context_copy_blocks(p.split, 0, &ok, 1, &ok, 0, &bytes), HS_OK);
    cr_assert_eq(bytes, 0);
    /* a sequence on a store with no room is refused, not read out of bounds */
    hs_token t = 1;
    int32_t bad_tab[1] = {N_SEQ * MAX_BLK};
    struct hs_forward_seq fs = {
        .tokens = &t, .n_tokens = 1, .block_table = bad_tab, .n_logits = 1, .store = 1};
    cr_assert_eq(hs_model_forward(p.split, &fs, 1), HS_E_INVAL);
    fs.store = 2;
    bad_tab[0] = 0;
    cr_assert_eq(hs_model_forward(p.split, &fs, 1), HS_E_INVAL);
    free_pair(&p);
}

/* A simulated attention backend (the NPU): the step's time becomes the timeline's: real FFN
 * stages, simulated attention, through the ping-pong's dependencies. */
Test(split, simulated_attention_runs_on_the_timeline)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/stories260K.gguf", models_dir());
    struct pair p = {0};
    make_pair(&p, path, true, HS_TYPE_F16, "npu");
    run_pair(&p, "stories260K on the npu");
    struct hs_split_stats ss;
    hs_context_get_split_stats(p.split, &ss);
    cr_assert_gt(ss.n_steps_split, 0);
    cr_assert_gt(ss.sim_attn_s, 0.0, "the npu charged no simulated time");
    /* the timeline holds at least the engine thread's real work (its stages never overlap)
     * and at least the attention the backend charged */
    cr_assert_geq(ss.timeline_s * 1.0001 + 1e-6, ss.ffn_busy_s);
    cr_assert_geq(ss.timeline_s * 1.0001 + 1e-6, ss.sim_attn_s);
    free_pair(&p);
}
