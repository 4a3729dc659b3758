/* api/server.c: the routes, the status -> HTTP table, and the small handlers (models, health,
 * metrics, tokenize, detokenize); completions are in generate.c, connections in http.c. */
#include "api/server-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/vision.h"
#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/engine.h"

/* ---- status -> HTTP: the one table ---- */

static const struct {
    hs_status st;
    int http;
} status_http[] = {
    {HS_OK, 200},      {HS_E_NOMEM, 503},  {HS_E_INVAL, 400},    {HS_E_FORMAT, 400},
    {HS_E_IO, 500},    {HS_E_NOTSUP, 400}, {HS_E_BUSY, 429},     {HS_E_DEVICE, 500},
    {HS_E_RANGE, 400}, {HS_E_NOENT, 404},  {HS_E_CANCELED, 503}, {HS_E_INTERNAL, 500},
};

int hs_api_http_status(hs_status st)
{
    for (size_t i = 0; i < HS_ARRAY_LEN(status_http); i++) {
        if (status_http[i].st == st) {
            return status_http[i].http;
        }
    }
    return 500;
}

static json_t *token_json(const struct hs_vocab *v, hs_token t)
{
    char piece[256];
    size_t n = hs_vocab_piece(v, t, true, piece, sizeof(piece));
    return hs__api_json_str(piece, HS_MIN(n, sizeof(piece)));
}

/* ---- small routes ---- */

static enum MHD_Result handle_models(struct hs_api_server *s, struct MHD_Connection *c,
                                     struct hs__req *rq)
{
    const struct hs_model_hparams *hp = hs_model_hparams(s->model);
    (void)hp;
    json_t *j = json_pack("{s:s,s:[{s:s,s:s,s:I,s:s,s:{s:i,s:i,s:I,s:I}}]}", "object", "list",
                          "data", "id", s->model_name, "object", "model", "created",
                          (json_int_t)s->created, "owned_by", "hetserve", "meta", "n_ctx_train",
                          (int)hs_engine_n_ctx(s->eng), "n_vocab", (int)hs_vocab_n_tokens(s->vocab),
                          "n_params", (json_int_t)hs_model_n_params(s->model), "size",
                          (json_int_t)hs_model_size_bytes(s->model));
    return hs__send_json(s, c, rq, 200, j, NULL, NULL);
}

static enum MHD_Result handle_health(struct hs_api_server *s, struct MHD_Connection *c,
                                     struct hs__req *rq)
{
    if (atomic_load(&s->quiesced)) {
        return hs__send_json(s, c, rq, 503, json_pack("{s:s}", "status", "draining"), "Retry-After",
                             "1");
    }
    if (!atomic_load(&s->ready)) {
        return hs__send_json(s, c, rq, 503, json_pack("{s:s}", "status", "loading"), "Retry-After",
                             "1");
    }
    return hs__send_json(s, c, rq, 200, json_pack("{s:s}", "status", "ok"), NULL, NULL);
}

static void metric(struct hs__buf *b, const char *name, const char *type, const char *help,
                   const char *model, double v)
{
    hs__buf_printf(b, "# HELP hetserve:%s %s\n# TYPE hetserve:%s %s\n", name, help, name, type);
    hs__buf_printf(b, "hetserve:%s{model_name=\"%s\"} %.17g\n", name, model, v);
}

static void histogram(struct hs__buf *b, const char *name, const char *help, const char *model,
                      const struct hs_engine_histogram *h)
{
    hs__buf_printf(b, "# HELP hetserve:%s %s\n# TYPE hetserve:%s histogram\n", name, help, name);
    for (int32_t i = 0; i < h->n_buckets; i++) {
        hs__buf_printf(b, "hetserve:%s_bucket{le=\"%g\",model_name=\"%s\"} %llu\n", name,
                       h->bounds_s[i], model, (unsigned long long)h->le[i]);
    }
    hs__buf_printf(b, "hetserve:%s_bucket{le=\"+Inf\",model_name=\"%s\"} %llu\n", name, model,
                   (unsigned long long)h->count);
    hs__buf_printf(b, "hetserve:%s_sum{model_name=\"%s\"} %.17g\n", name, model, h->sum_s);
    hs__buf_printf(b, "hetserve:%s_count{model_name=\"%s\"} %llu\n", name, model,
                   (unsigned long long)h->count);
}

/* Hot-expert statistics of MoE models: tokens routed per (layer, expert), with the backend the
 * expert runs on, so a dashboard can see which experts are hot and where they live. */
static void moe_metrics(struct hs_api_server *s, struct hs__buf *b)
{
    const struct hs_model_hparams *hp = hs_model_hparams(s->model);
    if (hp->router.n_expert == 0) {
        return;
    }
    hs__buf_printf(b, "# HELP hetserve:moe_expert_tokens_total Tokens routed to each expert.\n"
                      "# TYPE hetserve:moe_expert_tokens_total counter\n");
    for (int32_t il = 0; il < hp->n_layer; il++) {
        for (int32_t e = 0; e < hp->router.n_expert; e++) {
            const char *be = hs_engine_expert_backend(s->eng, il, e);
            if (!be) {
                break; /* a dense layer */
            }
            hs__buf_printf(b,
                           "hetserve:moe_expert_tokens_total{layer=\"%d\",expert=\"%d\","
                           "backend=\"%s\",model_name=\"%s\"} %llu\n",
                           il, e, be, s->model_name,
                           (unsigned long long)hs_engine_expert_tokens(s->eng, il, e));
        }
    }
}

/* Per-backend placement: busy and simulated seconds, bytes moved, sequences placed and KV blocks
 * held, labelled by backend and role; and the split execution's figures. */
static void placement_metrics(struct hs__buf *b, const struct hs_engine_metrics *m, const char *mn)
{
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"backend_busy_seconds_total", "counter",
         "Time spent in forward-pass stages, per backend."},
        {"backend_simulated_seconds_total", "counter", "Simulated hardware time, per backend."},
        {"backend_bytes_in_total", "counter", "Bytes copied into a backend from another."},
        {"backend_bytes_out_total", "counter", "Bytes copied out of a backend to another."},
        {"backend_sequences", "gauge", "Running sequences whose KV a backend holds."},
        {"backend_kv_blocks_used", "gauge", "KV blocks a backend holds for running sequences."},
        {"backend_kv_blocks_total", "gauge", "KV blocks of a backend's pool."},
    };
    for (size_t f = 0; f < HS_ARRAY_LEN(fams); f++) {
        hs__buf_printf(b, "# HELP hetserve:%s %s\n# TYPE hetserve:%s %s\n", fams[f].name,
                       fams[f].help, fams[f].name, fams[f].type);
        for (int32_t i = 0; i < m->n_backends; i++) {
            const struct hs_engine_backend_metrics *be = &m->backends[i];
            const double v[] = {
                be->busy_s, be->sim_s,          (double)be->bytes_in, (double)be->bytes_out,
                be->n_seqs, be->kv_blocks_used, be->kv_blocks_total};
            hs__buf_printf(b, "hetserve:%s{backend=\"%s\",role=\"%s\",model_name=\"%s\"} %.9g\n",
                           fams[f].name, be->name, be->role, mn, v[f]);
        }
    }
    metric(b, "kv_migrations_total", "counter",
           "Sequences whose KV moved to the attention backend.", mn, (double)m->migrations);
    metric(b, "kv_migrated_bytes_total", "counter", "KV bytes moved between backends.", mn,
           (double)m->migrated_bytes);
    metric(b, "split_steps_total", "counter", "Forward passes that used the attention backend.", mn,
           (double)m->split.n_steps);
    metric(b, "pingpong_steps_total", "counter", "Of those, run as two ping-pong sub-batches.", mn,
           (double)m->split.n_steps_split);
    metric(b, "pingpong_reordered_steps_total", "counter",
           "Ping-pong steps whose decodes --pingpong-balance reordered.", mn,
           (double)m->pingpong_reorders);
    metric(b, "pingpong_kv_imbalance_total", "counter",
           "Sum over ping-pong steps of |kv_A - kv_B| / (kv_A + kv_B) on the attention backend.",
           mn, m->split.kv_imbalance);
    metric(b, "split_overlap_seconds_total", "counter",
           "Time both backends were busy at once in split steps.", mn, m->split.overlap_s);
    metric(b, "split_wall_seconds_total", "counter", "Wall time of the split steps' layers.", mn,
           m->split.wall_s);
    metric(b, "split_predicted_seconds_total", "counter",
           "The balancer's predicted time of those layers.", mn, m->split.predicted_s);
    metric(b, "split_prediction_abs_error_seconds_total", "counter",
           "Sum over split steps of |predicted - measured| layer time.", mn, m->split.abs_err_s);
}

/* Length prediction (server/lengthpred.h) and segments: how far off the predicted output lengths
 * were, and how often long generations yielded their slot. */
static void length_metrics(struct hs__buf *b, const struct hs_engine_metrics *m, const char *mn)
{
    histogram(b, "output_length_prediction_relative_error",
              "Histogram of |predicted - actual| / actual output tokens per finished choice.", mn,
              &m->length_error);
    metric(b, "output_length_predicted_tokens_total", "counter",
           "Predicted output tokens of finished choices.", mn, (double)m->predicted_tokens);
    metric(b, "output_length_abs_error_tokens_total", "counter",
           "Sum of |predicted - actual| output tokens of finished choices.", mn,
           (double)m->length_abs_error_tokens);
    metric(b, "segment_yields_total", "counter",
           "Long generations that gave up their slot after a segment, keeping their KV.", mn,
           (double)m->segment_yields);
    metric(b, "segment_resumes_total", "counter", "Of those, resumed on their own KV.", mn,
           (double)m->segment_resumes);
    metric(b, "segment_evictions_total", "counter",
           "Parked generations whose KV blocks were taken under pressure.", mn,
           (double)m->segment_evictions);
    metric(b, "recomputed_tokens_total", "counter",
           "Tokens run again for preempted or evicted sequences.", mn,
           (double)m->recomputed_tokens);
}

/* Speculative decoding, labelled by draft source. */
static void spec_metrics(struct hs__buf *b, const struct hs_engine_metrics *m, const char *mn)
{
    static const char *const src[3] = {"request", "prompt", "global"};
    static const struct {
        const char *name, *help;
    } fams[] = {
        {"spec_decode_num_drafts_total", "Speculative drafts verified."},
        {"spec_decode_num_draft_tokens_total", "Tokens proposed by speculative drafts."},
        {"spec_decode_num_accepted_tokens_total", "Of those, tokens the model accepted."},
    };
    for (size_t f = 0; f < HS_ARRAY_LEN(fams); f++) {
        hs__buf_printf(b, "# HELP hetserve:%s %s\n# TYPE hetserve:%s counter\n", fams[f].name,
                       fams[f].help, fams[f].name);
        for (int i = 0; i < 3; i++) {
            const uint64_t v = f == 0   ? m->spec_drafts[i]
                               : f == 1 ? m->spec_drafted[i]
                                        : m->spec_accepted[i];
            hs__buf_printf(b, "hetserve:%s{source=\"%s\",model_name=\"%s\"} %llu\n", fams[f].name,
                           src[i], mn, (unsigned long long)v);
        }
    }
    uint64_t drafts = 0, drafted = 0, accepted = 0;
    for (int i = 0; i < 3; i++) {
        drafts += m->spec_drafts[i];
        drafted += m->spec_drafted[i];
        accepted += m->spec_accepted[i];
    }
    metric(b, "spec_decode_acceptance_rate", "gauge", "Accepted / proposed draft tokens.", mn,
           drafted ? (double)accepted / (double)drafted : 0.0);
    metric(b, "spec_decode_mean_accepted_length", "gauge", "Accepted tokens per draft.", mn,
           drafts ? (double)accepted / (double)drafts : 0.0);
    metric(b, "spec_decode_cost_knee_rows", "gauge",
           "Fitted fixed cost of a decode step in rows (a / b of a + b rows); a draft pays while "
           "the batch has fewer rows than this.",
           mn, m->spec_cost_knee);
    metric(b, "spec_decode_store_bytes", "gauge",
           "Bytes the store of earlier responses allocates (bounded by --spec-store-mib).", mn,
           (double)m->spec_store_bytes);
    metric(b, "spec_decode_store_responses", "gauge", "Earlier responses the draft store holds.",
           mn, (double)m->spec_store_responses);
    metric(b, "spec_decode_request_trie_bytes", "gauge",
           "Bytes of the running sequences' own suffix tries.", mn, (double)m->spec_text_bytes);
}

/* Image input (api/vision.c), where a projector is loaded: the encoder runs before the engine
 * sees the request, so its time is its own counter rather than part of the engine's stages. */
static void vision_metrics(struct hs__buf *b, struct hs__api_vision *av, const char *mn)
{
    if (!av) {
        return;
    }
    struct hs__api_vision_stats vs;
    hs__api_vision_get_stats(av, &vs);
    metric(b, "images_encoded_total", "counter", "Images run through the vision encoder.", mn,
           (double)vs.n_encoded);
    metric(b, "image_cache_hits_total", "counter",
           "Images whose embeddings came from the encoder's cache.", mn, (double)vs.n_hits);
    metric(b, "image_encode_seconds_total", "counter",
           "Time spent preprocessing and encoding images.", mn, vs.encode_s);
}

static enum MHD_Result handle_metrics(struct hs_api_server *s, struct MHD_Connection *c,
                                      struct hs__req *rq)
{
    struct hs_engine_metrics m;
    hs_engine_get_metrics(s->eng, &m);
    struct hs__buf b = {0};
    const char *mn = s->model_name;
    metric(&b, "num_requests_running", "gauge", "Number of requests currently running.", mn,
           m.n_running);
    metric(&b, "num_requests_waiting", "gauge", "Number of requests waiting to be processed.", mn,
           m.n_waiting);
    metric(&b, "num_sequences_running", "gauge", "Number of sequences (choices) running.", mn,
           m.n_seqs_running);
    metric(&b, "prompt_tokens_total", "counter", "Number of prefill tokens processed.", mn,
           (double)m.prompt_tokens);
    metric(&b, "generation_tokens_total", "counter", "Number of generation tokens processed.", mn,
           (double)m.generation_tokens);
    metric(&b, "kv_blocks_used", "gauge", "KV cache blocks held by running sequences.", mn,
           m.kv_blocks_used);
    metric(&b, "kv_blocks_cached", "gauge", "KV cache blocks kept only for prefix reuse.", mn,
           m.kv_blocks_cached);
    metric(&b, "kv_blocks_free", "gauge", "KV cache blocks free.", mn, m.kv_blocks_free);
    metric(&b, "kv_blocks_total", "gauge", "KV cache blocks in the pool.", mn, m.kv_blocks_total);
    metric(&b, "kv_cache_usage_perc", "gauge", "KV cache usage; 1 means 100 percent.", mn,
           m.kv_blocks_total > 0 ? (double)m.kv_blocks_used / m.kv_blocks_total : 0.0);
    metric(&b, "prefix_cache_hit_rate", "gauge",
           "Prompt tokens found in the prefix cache / prompt tokens.", mn, m.prefix_hit_rate);
    metric(&b, "prefix_cache_queries_total", "counter", "Prompt tokens looked up.", mn,
           (double)m.prompt_tokens);
    metric(&b, "prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", mn,
           (double)m.prefix_hit_tokens);
    metric(&b, "num_preemptions_total", "counter", "Cumulative number of preemptions.", mn,
           (double)m.preemptions);
    metric(&b, "sampling_draws_total", "counter", "Next tokens drawn by the sampler.", mn,
           (double)m.draws);
    metric(&b, "sampling_draws_in_tasks_total", "counter",
           "Of those, drawn as tasks on the compute threads.", mn, (double)m.draws_in_tasks);
    metric(&b, "sampling_seconds_total", "counter", "Wall time of the steps' draw phases.", mn,
           m.sampling_s);
    metric(&b, "request_submitted_total", "counter", "Requests accepted by the engine.", mn,
           (double)m.requests_submitted);
    metric(&b, "request_rejected_total", "counter", "Requests refused with a full queue.", mn,
           (double)m.requests_rejected);
    hs__buf_printf(&b, "# HELP hetserve:request_success_total Finished choices by reason.\n"
                       "# TYPE hetserve:request_success_total counter\n");
    for (int r = HS_FINISH_STOP; r < HS_FINISH_COUNT; r++) {
        hs__buf_printf(&b,
                       "hetserve:request_success_total{finished_reason=\"%s\",model_name=\"%s\"} "
                       "%llu\n",
                       hs_finish_reason_str((enum hs_finish_reason)r), mn,
                       (unsigned long long)m.requests_finished[r]);
    }
    hs__buf_printf(&b, "# HELP hetserve:requests_cancelled_total Requests canceled (client gone, "
                       "drain deadline) by where they were: queue, prefill or decode.\n"
                       "# TYPE hetserve:requests_cancelled_total counter\n");
    for (int p = 0; p < HS_CANCEL_COUNT; p++) {
        hs__buf_printf(&b,
                       "hetserve:requests_cancelled_total{phase=\"%s\",model_name=\"%s\"} "
                       "%llu\n",
                       hs_cancel_phase_str((enum hs_cancel_phase)p), mn,
                       (unsigned long long)m.requests_cancelled[p]);
    }
    histogram(&b, "time_to_first_token_seconds", "Histogram of time to first token in seconds.", mn,
              &m.ttft);
    histogram(&b, "time_per_output_token_seconds", "Histogram of time per output token in seconds.",
              mn, &m.tpot);
    histogram(&b, "e2e_request_latency_seconds",
              "Histogram of end to end request latency in seconds.", mn, &m.e2e);
    length_metrics(&b, &m, mn);
    metric(&b, "http_connections", "gauge", "Open HTTP connections.", mn, atomic_load(&s->n_conns));
    metric(&b, "http_body_bytes", "gauge", "Memory held by request bodies being received.", mn,
           (double)atomic_load(&s->body_bytes));
    moe_metrics(s, &b);
    placement_metrics(&b, &m, mn);
    spec_metrics(&b, &m, mn);
    vision_metrics(&b, s->vision, mn);
    if (b.oom) {
        free(b.p);
        return hs__send_error(s, c, rq, 503, NULL, "out of memory");
    }
    return hs__send_text(s, c, rq, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len,
                         NULL, NULL);
}

static enum MHD_Result handle_tokenize(struct hs_api_server *s, struct MHD_Connection *c,
                                       struct hs__req *rq)
{
    struct hs__api_err perr = {0};
    json_t *b =
        hs__api_load_object(rq->body.p ? rq->body.p : "", rq->body.len, s->p.max_json_depth, &perr);
    if (!b) {
        return hs__send_error(s, c, rq, 400, perr.param, "%s", perr.message);
    }
    const json_t *content = json_object_get(b, "content");
    const json_t *add = json_object_get(b, "add_special");
    const json_t *parse = json_object_get(b, "parse_special");
    const json_t *pieces = json_object_get(b, "with_pieces");
    if (json_object_get(b, "messages")) {
        /* vLLM's chat form: the prompt a chat request would get, tools and all */
        struct hs__api_req r = {0};
        hs_status st = hs__api_chat_prompt(&s->pctx, b, &r, &perr);
        bool with_pieces = json_is_true(pieces);
        json_decref(b);
        if (st != HS_OK) {
            hs__api_req_free(&r);
            return hs__send_error_ex(s, c, rq, perr.http ? perr.http : 400, perr.param, perr.code,
                                     NULL, NULL, perr.message);
        }
        json_t *arr = json_array();
        for (int32_t i = 0; i < r.prompts[0].n; i++) {
            hs_token t = r.prompts[0].ids[i];
            json_array_append_new(arr, with_pieces ? json_pack("{s:i,s:o?}", "id", t, "piece",
                                                               token_json(s->vocab, t))
                                                   : json_integer(t));
        }
        hs__api_req_free(&r);
        return hs__send_json(s, c, rq, 200, json_pack("{s:o?}", "tokens", arr), NULL, NULL);
    }
    if (!json_is_string(content)) {
        json_decref(b);
        return hs__send_error(s, c, rq, 400, "content", "content must be a string");
    }
    if ((add && !json_is_boolean(add)) || (parse && !json_is_boolean(parse)) ||
        (pieces && !json_is_boolean(pieces))) {
        json_decref(b);
        return hs__send_error(s, c, rq, 400, NULL,
                              "add_special, parse_special and with_pieces must be true or false");
    }
    size_t len = json_string_length(content), n = 0, cap = len + 8;
    hs_token *ids = malloc(cap * sizeof(hs_token));
    hs_status st = ids ? hs_tokenize(s->vocab, json_string_value(content), len, json_is_true(add),
                                     !parse || json_is_true(parse), ids, cap, &n)
                       : HS_E_NOMEM;
    if (st == HS_E_RANGE) {
        free(ids);
        cap = n;
        ids = malloc(cap * sizeof(hs_token));
        st = ids ? hs_tokenize(s->vocab, json_string_value(content), len, json_is_true(add),
                               !parse || json_is_true(parse), ids, cap, &n)
                 : HS_E_NOMEM;
    }
    json_decref(b);
    if (st != HS_OK) {
        free(ids);
        return hs__send_error(s, c, rq, hs_api_http_status(st), "content", "cannot tokenize: %s",
                              hs_status_str(st));
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        if (json_is_true(pieces)) {
            json_array_append_new(
                arr, json_pack("{s:i,s:o?}", "id", ids[i], "piece", token_json(s->vocab, ids[i])));
        } else {
            json_array_append_new(arr, json_integer(ids[i]));
        }
    }
    free(ids);
    return hs__send_json(s, c, rq, 200, json_pack("{s:o?}", "tokens", arr), NULL, NULL);
}

static enum MHD_Result handle_detokenize(struct hs_api_server *s, struct MHD_Connection *c,
                                         struct hs__req *rq)
{
    struct hs__api_err perr = {0};
    json_t *b =
        hs__api_load_object(rq->body.p ? rq->body.p : "", rq->body.len, s->p.max_json_depth, &perr);
    if (!b) {
        return hs__send_error(s, c, rq, 400, perr.param, "%s", perr.message);
    }
    const json_t *toks = json_object_get(b, "tokens");
    if (!json_is_array(toks)) {
        json_decref(b);
        return hs__send_error(s, c, rq, 400, "tokens", "tokens must be an array of token ids");
    }
    int32_t n_vocab = hs_vocab_n_tokens(s->vocab);
    struct hs__buf out = {0};
    size_t i;
    json_t *v;
    json_array_foreach(toks, i, v)
    {
        json_int_t t = json_is_integer(v) ? json_integer_value(v) : -1;
        if (t < 0 || t >= n_vocab) {
            json_decref(b);
            free(out.p);
            return hs__send_error(s, c, rq, 400, "tokens",
                                  "tokens[%zu] must be a token id in [0, %d)", i, (int)n_vocab);
        }
        char piece[256];
        size_t n = hs_vocab_piece(s->vocab, (hs_token)t, true, piece, sizeof(piece));
        hs__buf_add(&out, piece, HS_MIN(n, sizeof(piece)));
    }
    json_decref(b);
    json_t *text = hs__api_json_str(out.p ? out.p : "", out.len);
    bool oom = out.oom;
    free(out.p);
    if (oom) {
        json_decref(text);
        return hs__send_error(s, c, rq, 503, NULL, "out of memory");
    }
    return hs__send_json(s, c, rq, 200, json_pack("{s:o?}", "content", text), NULL, NULL);
}

/* ---- routing ---- */

static const struct hs__route routes[] = {
    {"/v1/chat/completions", "POST", HS__R_CHAT, true, false},
    {"/chat/completions", "POST", HS__R_CHAT, true, false},
    {"/v1/completions", "POST", HS__R_COMPLETIONS, true, false},
    {"/completions", "POST", HS__R_COMPLETIONS, true, false},
    {"/v1/models", "GET", HS__R_MODELS, true, false},
    {"/models", "GET", HS__R_MODELS, true, false},
    {"/health", "GET", HS__R_HEALTH, false, true},
    {"/metrics", "GET", HS__R_METRICS, false, true},
    {"/tokenize", "POST", HS__R_TOKENIZE, true, false},
    {"/detokenize", "POST", HS__R_DETOKENIZE, true, false},
};

const struct hs__route *hs__route_find(const char *url, const char *method, const char **allow,
                                       bool *preflight)
{
    size_t ulen = strcspn(url, "?");
    *allow = NULL;
    *preflight = false;
    for (size_t i = 0; i < HS_ARRAY_LEN(routes); i++) {
        if (strlen(routes[i].path) != ulen || strncmp(routes[i].path, url, ulen) != 0) {
            continue;
        }
        *allow = !strcmp(routes[i].method, "GET") ? "GET, HEAD, OPTIONS" : "POST, OPTIONS";
        if (!strcmp(method, "OPTIONS")) {
            *preflight = true;
            return NULL;
        }
        if (!strcmp(routes[i].method, method) ||
            (!strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET"))) {
            return &routes[i];
        }
        return NULL;
    }
    return NULL;
}

enum MHD_Result hs__route_run(struct hs_api_server *s, struct MHD_Connection *c, struct hs__req *rq)
{
    switch (rq->route->id) {
    case HS__R_CHAT:
        return hs__generate_start(s, c, rq, HS__API_CHAT);
    case HS__R_COMPLETIONS:
        return hs__generate_start(s, c, rq, HS__API_COMPLETION);
    case HS__R_MODELS:
        return handle_models(s, c, rq);
    case HS__R_HEALTH:
        return handle_health(s, c, rq);
    case HS__R_METRICS:
        return handle_metrics(s, c, rq);
    case HS__R_TOKENIZE:
        return handle_tokenize(s, c, rq);
    case HS__R_DETOKENIZE:
        return handle_detokenize(s, c, rq);
    case HS__R_COUNT:
        break;
    }
    return hs__send_error(s, c, rq, 500, NULL, "no handler");
}
