/* server/engine, split execution: two backends in ping-pong, sequences moving to the attention
 * backend past the long-context threshold (CPU, the simulated NPU and DIMM-PIM), and the
 * ping-pong balances, each against the unsplit engine's tokens and logprobs. */
#include "tests/server/engine-fixtures.h"
#include "tests/server/shared-models.h"

/* ---- split execution ---- */

/* Runs N greedy requests with logprobs on e, all submitted at once; requests i % 5 == 3 ask for
 * their attention on the FFN backend throughout, i % 5 == 4 on the attention backend from the
 * start (ignored by an engine that is not split). */
static bool split_vary; /* run_split_workload: max_tokens max_tok - (i * 7) % 13 */

static void run_split_workload(struct hs_engine *e, struct hs_model *m, int n, int max_tok,
                               struct result *out)
{
    struct hs_engine_handle *h[16];
    static hs_token prompts[16][64];
    for (int i = 0; i < n; i++) {
        const int np = make_prompt(m, i, prompts[i], 64);
        struct hs_engine_request rq;
        hs_engine_request_init(&rq);
        rq.prompt = prompts[i];
        rq.n_prompt = np;
        rq.max_tokens = max_tok - (split_vary ? (i * 7) % 13 : 0);
        rq.ignore_eos = true;
        rq.sampling.temperature = 0;
        rq.logprobs = true;
        rq.top_logprobs = 3;
        rq.place = i % 5 == 3 ? HS_PLACE_FFN : i % 5 == 4 ? HS_PLACE_ATTN : HS_PLACE_AUTO;
        struct hs_error err = {0};
        cr_assert_eq(hs_engine_submit(e, &rq, &h[i], &err), HS_OK, "%s", err.message);
    }
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        collect(h[i], &out[i]);
        cr_assert_eq(out[i].status, HS_OK);
        hs_engine_release(h[i]);
    }
}

/* Two CPU backends (attention on its own thread and core), ping-pong, and a long-context
 * threshold that moves sequences to the attention backend mid-generation: 16 concurrent
 * requests give the tokens and logprobs of the unsplit engine on every model in
 * ../shared/models. Which requests share a step depends on when they arrive, in either engine,
 * so the steps are kept under 64 rows: attention then always takes its small-batch path, whose
 * bits do not depend on the batch, as the F32/F16/Q8_0 matmuls' do not, so logprobs must be
 * equal bit for bit (Q4_K too: its tiles sum in the order of its single rows). */
static void split_matches_unsplit_with(const char *attn, enum hs_pingpong_balance balance,
                                       const char *const *files, size_t n_files)
{
    enum { N = 16, MAX_TOK = 20 };
    struct result *a = calloc(N, sizeof(*a));
    struct result *b = calloc(N, sizeof(*b));
    cr_assert(a && b);
    for (size_t f = 0; f < n_files; f++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", getenv("HS_MODELS_DIR"), files[f]);
        struct hs_model *m = load_file(path);
        /* the balances run with fewer slots than requests, the unsplit engine alike */
        const int n_par = balance != HS_PINGPONG_BALANCE_CUT ? 12 : N;
        struct hs_engine *mono = make_engine(m, n_par, 128, 0, 32);
        run_split_workload(mono, m, N, MAX_TOK, a);
        hs_engine_destroy(mono);

        struct hs_engine_params p = hs_engine_default_params();
        p.n_parallel = N;
        p.n_ctx = 128;
        p.n_batch_tokens = 32;
        p.kv_type = HS_TYPE_F32;
        p.n_threads = 1;
        p.attn_backend = attn;
        p.attn_threads = 1;
        p.pingpong = true;
        p.pingpong_balance = balance;
        p.n_parallel = n_par; /* < N: sequences end and others start decoding mid-run */
        p.long_context = 16;  /* most prompts are shorter: they move while generating */
        struct hs_engine *split = NULL;
        struct hs_error err = {0};
        cr_assert_eq(hs_engine_create(m, &p, &split, &err), HS_OK, "%s", err.message);
        run_split_workload(split, m, N, MAX_TOK, b);
        for (int i = 0; i < N; i++) {
            cr_assert_eq(b[i].n_toks[0], a[i].n_toks[0], "%s: request %d", files[f], i);
            for (int t = 0; t < a[i].n_toks[0]; t++) {
                cr_assert_eq(b[i].toks[0][t], a[i].toks[0][t], "%s: request %d token %d", files[f],
                             i, t);
                cr_assert(memcmp(&b[i].lp[0][t], &a[i].lp[0][t], sizeof(float)) == 0,
                          "%s: request %d token %d: logprob %.9g split, %.9g not", files[f], i, t,
                          b[i].lp[0][t], a[i].lp[0][t]);
                cr_assert_eq(b[i].top0[0][t], a[i].top0[0][t]);
            }
        }
        wait_idle(split);
        struct hs_engine_metrics mt;
        hs_engine_get_metrics(split, &mt);
        cr_assert_eq(mt.n_backends, 2);
        cr_assert_str_eq(mt.backends[0].role, "ffn");
        cr_assert_str_eq(mt.backends[1].role, "attention");
        cr_assert_gt(mt.migrations, 0, "%s: no sequence crossed the threshold", files[f]);
        cr_assert_gt(mt.migrated_bytes, 0);
        cr_assert_eq(mt.backends[0].bytes_out, mt.migrated_bytes);
        cr_assert_eq(mt.backends[1].bytes_in, mt.migrated_bytes);
        cr_assert_gt(mt.split.n_steps_split, 0, "%s: ping-pong never ran", files[f]);
        cr_assert((mt.pingpong_reorders > 0) == (balance != HS_PINGPONG_BALANCE_CUT),
                  "%s: %llu steps reordered under balance %s", files[f],
                  (unsigned long long)mt.pingpong_reorders, hs_pingpong_balance_str(balance));
        cr_assert_gt(mt.backends[1].busy_s, 0.0);
        cr_assert_str_eq(mt.backends[1].name, attn);
        cr_assert((mt.backends[1].sim_s > 0) == (strcmp(attn, "cpu") != 0),
                  "%s: simulated time %g on %s", files[f], mt.backends[1].sim_s, attn);
        for (int s = 0; s < 2; s++) {
            cr_assert_eq(mt.backends[s].n_seqs, 0);
            cr_assert_eq(mt.backends[s].kv_blocks_used, 0);
        }
        hs_engine_destroy(split);
        hs_model_destroy(m);
    }
    free(a);
    free(b);
}

static void split_matches_unsplit(const char *attn)
{
    /* Under valgrind (HS_VALGRIND; ~100 times slower) two files for each attention backend, the
     * six covering the llama, qwen2, qwen2moe and qwen3moe architectures and F32, F16, Q8_0 and
     * Q4_K weights, with the same workload and checks. */
    static const struct {
        const char *attn, *files[2];
    } vg[] = {{"cpu", {"stories260K.gguf", "tiny-q4_k_m.gguf"}},
              {"npu", {"qwen2-bpe-f32.gguf", "moe-qwen3-mini-q8_0.gguf"}},
              {"pim", {"tiny-f16.gguf", "moe-qwen2-mini-q8_0.gguf"}}};
    if (getenv("HS_VALGRIND")) {
        for (size_t i = 0; i < HS_ARRAY_LEN(vg); i++) {
            if (!strcmp(vg[i].attn, attn)) {
                split_matches_unsplit_with(attn, HS_PINGPONG_BALANCE_CUT, vg[i].files, 2);
                return;
            }
        }
        cr_assert_fail("no valgrind files for %s", attn);
    }
    split_matches_unsplit_with(attn, HS_PINGPONG_BALANCE_CUT, hs_test_shared_models,
                               HS_TEST_N_SHARED_MODELS);
}

Test(engine, split_execution_matches_the_unsplit_engine, .timeout = 600)
{
    split_matches_unsplit("cpu");
}

/* The same with the simulated NPU (backends/npu) running the decode attention: its cores'
 * shares, each a whole (sequence, head) here, give the CPU kernels' bits. */
Test(engine, npu_attention_matches_the_unsplit_engine, .timeout = 600)
{
    split_matches_unsplit("npu");
}

/* The length-aware and KV balances reorder the decodes at the front of the batch (whole 4-row
 * tiles only) so the split falls between even sides: outputs stay the unsplit engine's, with
 * requests of different lengths so that sequences end and new ones start decoding mid-run. */
Test(engine, pingpong_balance_keeps_the_unsplit_outputs, .timeout = 600)
{
    static const char *const files[] = {"tiny-f32.gguf",       "tiny-f16.gguf",
                                        "tiny-q8_0.gguf",      "tiny-q4_k_m.gguf",
                                        "qwen3-bpe-q8_0.gguf", "moe-qwen2-mini-q8_0.gguf"};
    /* under valgrind one file for each balance (a dense and an MoE one) */
    const bool vg = getenv("HS_VALGRIND") != NULL;
    split_vary = true;
    split_matches_unsplit_with("cpu", HS_PINGPONG_BALANCE_LENGTH, files,
                               vg ? 1 : HS_ARRAY_LEN(files));
    split_matches_unsplit_with("pim", HS_PINGPONG_BALANCE_KV, vg ? files + 5 : files,
                               vg ? 1 : HS_ARRAY_LEN(files));
    split_vary = false;
}

/* The same with the simulated DIMM-PIM backend computing the decode attention rank by rank. */
Test(engine, pim_attention_matches_the_unsplit_engine, .timeout = 600)
{
    split_matches_unsplit("pim");
}
