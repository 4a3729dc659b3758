/* trace-engine OUT.json: serves 8 concurrent greedy requests on a split engine (two CPU backends,
 * ping-pong) with --trace OUT.json, then reads the trace back and checks that it shows the two
 * sub-batches overlapping: an attention event of one sub-batch on the attention thread's track
 * overlaps in time a dense-layer event of the other sub-batch on the engine thread's track.
 * Exit 0 when it does, 1 when not, 2 on any failure. tests/common/check-trace-schema.py runs
 * it (--write-with) and validates the same file against the trace-event JSON Schema. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/tokenizer/vocab.h"
#include "server/engine.h"

#define N_REQ 8

static int fail(const char *what)
{
    fprintf(stderr, "trace-engine: %s\n", what);
    return 2;
}

struct span {
    double t0, t1;
    char sub;   /* 'A' or 'B' */
    bool attn;  /* on the attention thread */
    bool dense; /* pre or post on the engine thread */
};

int main(int argc, char **argv)
{
    if (argc != 2) {
        return fail("usage: trace-engine OUT.json (HS_MODELS_DIR names the models)");
    }
    const char *dir = getenv("HS_MODELS_DIR");
    char path[1024];
    snprintf(path, sizeof(path), "%s/stories260K.gguf", dir ? dir : "../shared/models");
    struct hs_error err = {0};
    struct hs_model *m = NULL;
    if (hs_model_load(path, &m, &err) != HS_OK) {
        return fail(err.message);
    }
    struct hs_engine_params p = hs_engine_default_params();
    p.n_parallel = N_REQ;
    p.n_ctx = 256;
    p.n_threads = 1;
    p.attn_backend = "cpu";
    p.attn_threads = 1;
    p.pingpong = true;
    p.trace_path = argv[1];
    struct hs_engine *e = NULL;
    if (hs_engine_create(m, &p, &e, &err) != HS_OK) {
        return fail(err.message);
    }
    struct hs_engine_handle *h[N_REQ];
    hs_token prompt[64];
    for (int i = 0; i < N_REQ; i++) {
        char text[64];
        snprintf(text, sizeof(text), "Once upon a time there were %d cats", i + 2);
        size_t n = 0;
        if (hs_tokenize(hs_model_vocab(m), text, strlen(text), true, false, prompt, 64, &n) !=
            HS_OK) {
            return fail("tokenize failed");
        }
        struct hs_engine_request rq;
        hs_engine_request_init(&rq);
        rq.prompt = prompt;
        rq.n_prompt = (int32_t)n;
        rq.max_tokens = 48;
        rq.ignore_eos = true;
        rq.sampling.temperature = 0;
        if (n == 0 || hs_engine_submit(e, &rq, &h[i], &err) != HS_OK) {
            return fail("submit failed");
        }
    }
    for (int i = 0; i < N_REQ; i++) {
        struct hs_engine_event ev;
        do {
            if (hs_engine_wait(h[i], &ev, 60000) != HS_OK) {
                return fail("no event within 60 s");
            }
        } while (ev.type != HS_EVENT_DONE);
        hs_engine_release(h[i]);
    }
    hs_engine_destroy(e); /* closes the trace */
    hs_model_destroy(m);

    json_error_t jerr;
    json_t *root = json_load_file(argv[1], 0, &jerr);
    if (!json_is_array(root)) {
        return fail("the trace is not a JSON array");
    }
    const size_t n = json_array_size(root);
    struct span *sp = calloc(n + 1, sizeof(*sp));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *ev = json_array_get(root, i);
        const char *ph = json_string_value(json_object_get(ev, "ph"));
        const char *name = json_string_value(json_object_get(ev, "name"));
        if (!ph || strcmp(ph, "X") != 0 || !name) {
            continue;
        }
        const size_t len = strlen(name);
        if (len < 3 || name[len - 2] != ' ' || (name[len - 1] != 'A' && name[len - 1] != 'B')) {
            continue;
        }
        const double ts = json_number_value(json_object_get(ev, "ts"));
        const double dur = json_number_value(json_object_get(ev, "dur"));
        const int64_t tid = json_integer_value(json_object_get(ev, "tid"));
        sp[k] = (struct span){
            .t0 = ts,
            .t1 = ts + dur,
            .sub = name[len - 1],
            .attn = tid == 2 && strncmp(name, "attention", 9) == 0,
            .dense = tid == 1 && (strncmp(name, "pre", 3) == 0 || strncmp(name, "post", 4) == 0)};
        k++;
    }
    int overlaps = 0;
    for (size_t i = 0; i < k; i++) {
        for (size_t j = 0; j < k && sp[i].attn; j++) {
            if (sp[j].dense && sp[j].sub != sp[i].sub && sp[i].t0 < sp[j].t1 &&
                sp[j].t0 < sp[i].t1) {
                overlaps++;
            }
        }
    }
    free(sp);
    json_decref(root);
    printf("trace-engine: %zu stage events; %d overlaps of one sub-batch's attention with the "
           "other's dense layers\n",
           k, overlaps);
    return overlaps > 0 ? 0 : 1;
}
