/* The hetserve binary end to end: bad input gives one line on stderr and exit status 2; good
 * input generates text and JSON log-probability lines. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/server/shared-models.h"

struct result {
    int status;
    char out[65536];
    char err[8192];
};

/* Runs `hetserve ARGS` through the shell, capturing stdout and stderr. */
static void run(struct result *r, const char *args)
{
    const char *build = getenv("HS_BUILD_DIR");
    cr_assert(build, "HS_BUILD_DIR is not set");
    char outf[] = "/tmp/hs-cli-out-XXXXXX", errf[] = "/tmp/hs-cli-err-XXXXXX";
    int fo = mkstemp(outf), fe = mkstemp(errf);
    cr_assert(fo >= 0 && fe >= 0);
    close(fo);
    close(fe);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "%s/api/hetserve %s >%s 2>%s </dev/null", build, args, outf, errf);
    int st = system(cmd);
    cr_assert(WIFEXITED(st), "command did not exit normally: %s", cmd);
    r->status = WEXITSTATUS(st);
    FILE *f = fopen(outf, "r");
    size_t n = fread(r->out, 1, sizeof(r->out) - 1, f);
    r->out[n] = '\0';
    fclose(f);
    f = fopen(errf, "r");
    n = fread(r->err, 1, sizeof(r->err) - 1, f);
    r->err[n] = '\0';
    fclose(f);
    unlink(outf);
    unlink(errf);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) {
        n += *s == '\n';
    }
    return n;
}

static void expect_usage_error(const char *args, const char *needle)
{
    static struct result r;
    run(&r, args);
    cr_assert_eq(r.status, 2, "'%s' exited %d, stderr: %s", args, r.status, r.err);
    cr_assert_eq(count_lines(r.err), 1, "'%s' should print one line, got: %s", args, r.err);
    cr_assert(strstr(r.err, needle), "'%s': expected '%s' in: %s", args, needle, r.err);
}

static char model_path[1024];

static void setup(void)
{
    snprintf(model_path, sizeof(model_path), "%s/stories260K.gguf", getenv("HS_MODELS_DIR"));
}

Test(cli, bad_input_exits_2_with_one_line, .init = setup)
{
    char args[2048];
    expect_usage_error("frobnicate", "unknown command");
    expect_usage_error("generate -p hi", "-m MODEL");
    expect_usage_error("generate -m /nonexistent/model.gguf -p hi", "/nonexistent/model.gguf");
    expect_usage_error("generate -m /etc/hostname -p hi", "GGUF");
    snprintf(args, sizeof(args), "generate -m %s -p hi -n abc", model_path);
    expect_usage_error(args, "-n");
    snprintf(args, sizeof(args), "generate -m %s -p hi --top-p 1.5", model_path);
    expect_usage_error(args, "--top-p");
    snprintf(args, sizeof(args), "generate -m %s -p hi --bogus", model_path);
    expect_usage_error(args, "--bogus");
    snprintf(args, sizeof(args), "generate -m %s -p 'a long prompt' -n 100 --ctx 8", model_path);
    expect_usage_error(args, "context");
    snprintf(args, sizeof(args),
             "generate -m %s/moe-qwen2-mini-q8_0.gguf -p hi --expert-placement 'expert=gpu'",
             getenv("HS_MODELS_DIR"));
    expect_usage_error(args, "not compiled in");
    snprintf(args, sizeof(args),
             "bench -m %s/moe-qwen2-mini-q8_0.gguf --expert-placement 'blk\\.(=cpu'",
             getenv("HS_MODELS_DIR"));
    expect_usage_error(args, "pattern");
    snprintf(args, sizeof(args), "generate -m %s -p hi --expert-placement 'x=cpu'", model_path);
    expect_usage_error(args, "has no experts");
    expect_usage_error("mkmodel -o /tmp/x.gguf --type q9_9", "--type");
    expect_usage_error("mkmodel -o /tmp/x.gguf --arch qwen2moe", "--experts");
    expect_usage_error("mkmodel -o /tmp/x.gguf --arch qwen3 --experts 4 --experts-used 2",
                       "no experts");
    expect_usage_error("mkmodel -o /tmp/x.gguf --arch llama --cla 2", "hunyuan-large");
    expect_usage_error("mkmodel -o /tmp/x.gguf --gating relu", "--gating");
    expect_usage_error("bench", "-m MODEL");
    snprintf(args, sizeof(args), "generate -m %s -p hi --schedule sjf", model_path);
    expect_usage_error(args, "--schedule");
    snprintf(args, sizeof(args), "generate -m %s -p hi --segment-tokens -4", model_path);
    expect_usage_error(args, "--segment-tokens");
    snprintf(args, sizeof(args), "bench -m %s --fair-wait-ms 0", model_path);
    expect_usage_error(args, "--fair-wait-ms");
    snprintf(args, sizeof(args), "bench -m %s -d -1", model_path);
    expect_usage_error(args, "-d");
    snprintf(args, sizeof(args), "generate -m %s -p hi --speculative ngram", model_path);
    expect_usage_error(args, "--speculative");
    snprintf(args, sizeof(args), "generate -m %s -p hi --spec-max-draft 33", model_path);
    expect_usage_error(args, "--spec-max-draft");
    snprintf(args, sizeof(args), "generate -m %s -p hi --spec-store-mib 0", model_path);
    expect_usage_error(args, "--spec-store-mib");
    snprintf(args, sizeof(args), "generate -m %s -p hi --spec-store-mib 8x", model_path);
    expect_usage_error(args, "--spec-store-mib");
}

Test(cli, generate_with_speculation_writes_the_same_story, .init = setup)
{
    /* TinyStories repeats itself ("Lily ... Lily"): the sequence's own text drafts */
    static struct result a, b;
    char args[2048];
    snprintf(args, sizeof(args), "generate -m %s -p 'Once upon a time' -n 200 --temp 0",
             model_path);
    run(&a, args);
    cr_assert_eq(a.status, 0, "stderr: %s", a.err);
    snprintf(args, sizeof(args),
             "generate -m %s -p 'Once upon a time' -n 200 --temp 0 --speculative suffix "
             "--spec-store-mib 1",
             model_path);
    run(&b, args);
    cr_assert_eq(b.status, 0, "stderr: %s", b.err);
    cr_assert_str_eq(b.out, a.out);
}

Test(cli, a_mixture_of_experts_model_generates_with_placed_experts, .init = setup)
{
    static struct result a, b;
    char args[2048];
    snprintf(args, sizeof(args),
             "generate -m %s/moe-qwen2-mini-q8_0.gguf -p 'hello' -n 12 --temp 0",
             getenv("HS_MODELS_DIR"));
    run(&a, args);
    cr_assert_eq(a.status, 0, "stderr: %s", a.err);
    cr_assert_gt(strlen(a.out), 0);
    /* Half the experts on a second CPU backend instance: the same text. */
    snprintf(args, sizeof(args),
             "generate -m %s/moe-qwen2-mini-q8_0.gguf -p 'hello' -n 12 --temp 0 "
             "--override-tensor 'expert\\.[0-3]$=cpu:1,shared=cpu:1'",
             getenv("HS_MODELS_DIR"));
    run(&b, args);
    cr_assert_eq(b.status, 0, "stderr: %s", b.err);
    cr_assert_str_eq(a.out, b.out);
}

Test(cli, generate_writes_a_story, .init = setup)
{
    static struct result r;
    char args[2048];
    snprintf(args, sizeof(args), "generate -m %s -p 'Once upon a time' -n 40 --temp 0", model_path);
    run(&r, args);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    /* The trained TinyStories model continues with ordinary English words. */
    cr_assert(strstr(r.out, " the ") || strstr(r.out, " a "), "output: %s", r.out);
}

Test(cli, same_seed_same_text_and_stop_strings_never_leak, .init = setup)
{
    static struct result a, b;
    char args[2048];
    snprintf(args, sizeof(args), "generate -m %s -p 'Once upon a time' -n 60 --seed 9 --temp 1",
             model_path);
    run(&a, args);
    run(&b, args);
    cr_assert_eq(a.status, 0);
    cr_assert_str_eq(a.out, b.out);
    /* Stop at the first " the" of the greedy story: what is printed must end just before it. */
    static struct result g, s;
    snprintf(args, sizeof(args), "generate -m %s -p 'Once upon a time' -n 60 --temp 0", model_path);
    run(&g, args);
    char *hit = strstr(g.out, " the");
    cr_assert(hit, "greedy story has no ' the': %s", g.out);
    snprintf(args, sizeof(args),
             "generate -m %s -p 'Once upon a time' -n 60 --temp 0 --stop ' the'", model_path);
    run(&s, args);
    cr_assert_eq(s.status, 0);
    cr_assert_eq(strlen(s.out), (size_t)(hit - g.out) + 1, "stopped output: '%s'", s.out);
    cr_assert(!strncmp(s.out, g.out, (size_t)(hit - g.out)));
}

Test(cli, logprobs_prints_one_json_line_per_step, .init = setup)
{
    static struct result r;
    char args[2048];
    snprintf(args, sizeof(args), "generate -m %s -p 'Once upon a time' -n 5 --temp 0 --logprobs 3",
             model_path);
    run(&r, args);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_eq(count_lines(r.out), 5, "%s", r.out);
    cr_assert(!strncmp(r.out, "{\"step\":0,\"token\":", 18), "%s", r.out);
    cr_assert(strstr(r.out, "\"top\":[{\"token\":"), "%s", r.out);
}

/* A token holding part of a character (a byte-fallback token: id 229 is <0xE2> in the
 * stories260K vocabulary) keeps every --logprobs line valid JSON (jansson rejects invalid
 * UTF-8): the text shows U+FFFD and "bytes" gives the token's exact bytes. */
Test(cli, logprobs_lines_stay_valid_utf8_with_partial_characters, .init = setup)
{
    static struct result r;
    char args[2048];
    snprintf(args, sizeof(args),
             "generate -m %s -p 'Once' -n 3 --temp 0 --logit-bias 229=100 --logprobs 2",
             model_path);
    run(&r, args);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_eq(count_lines(r.out), 3, "%s", r.out);
    char *line = r.out;
    for (int i = 0; i < 3; i++) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl);
        json_error_t jerr;
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        cr_assert_not_null(j, "line %d is not JSON (%s): %.*s", i, jerr.text, (int)(nl - line),
                           line);
        cr_assert_eq(json_integer_value(json_object_get(j, "token")), 229);
        cr_assert_str_eq(json_string_value(json_object_get(j, "text")), "\xef\xbf\xbd");
        json_t *bytes = json_object_get(j, "bytes");
        cr_assert_eq(json_array_size(bytes), 1);
        cr_assert_eq(json_integer_value(json_array_get(bytes, 0)), 0xe2);
        json_decref(j);
        line = nl + 1;
    }
}

/* ---- generate and bench run through the engine: its flags work there too ---- */

static const char *const split_flags[] = {
    "--attn-backend cpu --attn-threads 1 --pingpong",
    "--attn-threads 1 --long-context 4",
};

/* The same text and the same --logprobs lines, split or not, on a dense and a MoE model. */
Test(cli, generate_gives_the_same_output_with_split_execution, .init = setup, .timeout = 120)
{
    static const char *const models[] = {"stories260K.gguf", "moe-qwen2-mini-q8_0.gguf"};
    static const char *const modes[] = {"-n 40 --temp 0", "-n 24 --temp 0 --logprobs 5",
                                        "-n 40 --seed 7 --temp 1"};
    static struct result want, got;
    char args[2048];
    for (size_t m = 0; m < 2; m++) {
        for (size_t k = 0; k < 3; k++) {
            snprintf(args, sizeof(args), "generate -m %s/%s -p 'Once' -t 1 %s",
                     getenv("HS_MODELS_DIR"), models[m], modes[k]);
            run(&want, args);
            cr_assert_eq(want.status, 0, "%s: %s", args, want.err);
            cr_assert_gt(strlen(want.out), 1, "%s", args);
            for (size_t f = 0; f < 2; f++) {
                snprintf(args, sizeof(args), "generate -m %s/%s -p 'Once' -t 1 %s %s",
                         getenv("HS_MODELS_DIR"), models[m], modes[k], split_flags[f]);
                run(&got, args);
                cr_assert_eq(got.status, 0, "%s: %s", args, got.err);
                cr_assert_str_eq(got.out, want.out, "%s", args);
            }
        }
    }
}

/* The trace's events of one kind ("X", "C", ...): a JSON array of trace events. */
static size_t trace_events(json_t *root, const char *ph)
{
    cr_assert(json_is_array(root), "the trace is no array of events");
    size_t n = 0, i;
    json_t *ev;
    json_array_foreach(root, i, ev)
    {
        n += !strcmp(json_string_value(json_object_get(ev, "ph")), ph);
    }
    return n;
}

/* --trace writes Chrome trace JSON with complete (X) events; with --long-context 4 the KV
 * blocks of a 2-token prompt sit on the FFN backend first and on the attention backend later
 * (the sequence migrated mid-generation). */
Test(cli, generate_trace_is_json_and_shows_the_migration, .init = setup)
{
    static struct result r;
    char path[] = "/tmp/hs-cli-trace-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    char args[2048];
    snprintf(args, sizeof(args),
             "generate -m %s -p 'Once' -n 20 --temp 0 -t 1 --attn-threads 1 --long-context 4 "
             "--trace %s",
             model_path, path);
    run(&r, args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    unlink(path);
    cr_assert(root, "the trace is not JSON: %s (line %d)", jerr.text, jerr.line);
    cr_assert_gt(trace_events(root, "X"), 0);
    bool ffn_first = false, attn_later = false;
    size_t i;
    json_t *ev;
    json_array_foreach(root, i, ev)
    {
        json_t *a = json_object_get(ev, "args");
        if (strcmp(json_string_value(json_object_get(ev, "ph")), "C") != 0) {
            continue;
        }
        if (!attn_later && json_integer_value(json_object_get(a, "ffn")) > 0) {
            ffn_first = true;
        }
        if (ffn_first && json_integer_value(json_object_get(a, "attention")) > 0) {
            attn_later = true;
        }
    }
    cr_assert(ffn_first && attn_later, "no migration from the FFN to the attention backend");
    json_decref(root);
}

static int count_str(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle)) {
        n++;
    }
    return n;
}

/* Greedy generation that ends on EOS prints the EOS step's line last, as the loop before the
 * engine did: 20 lines here, the last one token 2 (</s>) with empty text; the text stops before
 * it. K goes up to 100. */
Test(cli, logprobs_prints_the_step_that_ends_the_generation, .init = setup)
{
    static struct result r, t, k;
    char args[2048];
    snprintf(args, sizeof(args),
             "generate -m %s -p 'Once upon a time' -n 60 --temp 0 --logit-bias 2=20 --logprobs 2",
             model_path);
    run(&r, args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_eq(count_lines(r.out), 20, "%s", r.out);
    const char *last = r.out + strlen(r.out) - 1;
    while (last > r.out && last[-1] != '\n') {
        last--;
    }
    const char *eos_line = "{\"step\":19,\"token\":2,\"text\":\"\",\"bytes\":[],\"top\":[{";
    cr_assert(!strncmp(last, eos_line, strlen(eos_line)), "%s", last);
    snprintf(args, sizeof(args),
             "generate -m %s -p 'Once upon a time' -n 60 --temp 0 --logit-bias 2=20", model_path);
    run(&t, args);
    cr_assert_eq(t.status, 0, "%s", t.err);
    cr_assert_eq(count_lines(t.out), 1, "%s", t.out);
    snprintf(args, sizeof(args), "generate -m %s -p 'Once' -n 3 --temp 0 --logprobs 100",
             model_path);
    run(&k, args);
    cr_assert_eq(k.status, 0, "%s", k.err);
    cr_assert_eq(count_lines(k.out), 3);
    cr_assert_eq(count_str(k.out, "{\"token\":"), 300, "%s", k.out);
    snprintf(args, sizeof(args), "generate -m %s -p 'Once' -n 3 --logprobs 101", model_path);
    expect_usage_error(args, "--logprobs");
}

/* bench runs through the engine with the split flags and prints its pp and tg lines. */
Test(cli, bench_runs_with_split_execution, .init = setup)
{
    static struct result r;
    char args[2048];
    for (size_t f = 0; f < 2; f++) {
        snprintf(args, sizeof(args), "bench -m %s -p 32 -n 16 -r 1 -t 1 --no-probes %s", model_path,
                 split_flags[f]);
        run(&r, args);
        cr_assert_eq(r.status, 0, "%s: %s", args, r.err);
        cr_assert(strstr(r.out, "| pp32   | "), "%s", r.out);
        cr_assert(strstr(r.out, "| tg16   | "), "%s", r.out);
        cr_assert(strstr(r.out, "attention on cpu with 1 threads"), "%s", r.out);
    }
    /* unsplit, with the probes: the weights per decoded token as counted */
    snprintf(args, sizeof(args), "bench -m %s -p 16 -n 8 -r 1 -t 1", model_path);
    run(&r, args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "| tg8    | "), "%s", r.out);
    cr_assert(strstr(r.out, "MiB counted by the backends"), "%s", r.out);
    cr_assert(!strstr(r.out, "attention on"), "%s", r.out);
    /* at a depth: both tests after 40 tokens of context */
    snprintf(args, sizeof(args), "bench -m %s -p 16 -n 8 -d 40 -r 1 -t 1 --no-probes", model_path);
    run(&r, args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "| pp16 @ d40 | "), "%s", r.out);
    cr_assert(strstr(r.out, "| tg8 @ d40 | "), "%s", r.out);
    /* batched at a depth: 3 sequences of 24 prompt tokens each, then the decode steps */
    snprintf(args, sizeof(args), "bench -m %s -p 0 -n 8 -b 3 -d 24 -r 1 -t 1 --no-probes",
             model_path);
    run(&r, args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "| tg8 x3 @ d24 | "), "%s", r.out);
    cr_assert(strstr(r.out, "(3 sequences together"), "%s", r.out);
}

/* The simulated NPU as the attention backend of generate: the same tokens and logprobs as the
 * CPU backend (a lone sequence of under a thousand tokens is never chunked, so every (row,
 * head) is one core's partial of its whole range: the CPU's bits), on a tenant of the default
 * chip and on one of two 3x3s; its flags' mistakes are one line. */
Test(cli, generate_on_the_npu_gives_the_cpu_logprobs, .init = setup)
{
    static struct result a, b, c;
    char args[2048];
    snprintf(args, sizeof(args), "generate -m %s -p 'Once upon a time' -n 24 --temp 0 --logprobs 4",
             model_path);
    run(&a, args);
    cr_assert_eq(a.status, 0, "stderr: %s", a.err);
    snprintf(args, sizeof(args),
             "generate -m %s -p 'Once upon a time' -n 24 --temp 0 --logprobs 4 "
             "--attn-backend npu",
             model_path);
    run(&b, args);
    cr_assert_eq(b.status, 0, "stderr: %s", b.err);
    cr_assert_str_eq(a.out, b.out);
    snprintf(args, sizeof(args),
             "generate -m %s -p 'Once upon a time' -n 24 --temp 0 --logprobs 4 "
             "--attn-backend npu --attn-threads 2 --npu-tenants 3x3,3x3",
             model_path);
    run(&c, args);
    cr_assert_eq(c.status, 0, "stderr: %s", c.err);
    cr_assert_str_eq(a.out, c.out);

    snprintf(args, sizeof(args), "generate -m %s -p hi --attn-backend npu --npu-tenants 3x",
             model_path);
    expect_usage_error(args, "--npu-tenants");
    snprintf(args, sizeof(args), "generate -m %s -p hi --npu-config /nonexistent/npu.conf",
             model_path);
    expect_usage_error(args, "/nonexistent/npu.conf");
    char conf[64];
    snprintf(conf, sizeof(conf), "/tmp/hs-cli-npu-%d.conf", (int)getpid());
    FILE *f = fopen(conf, "w");
    fputs("mesh_x = 4\n# comment\nlink_bytes = wide\n", f);
    fclose(f);
    snprintf(args, sizeof(args), "serve -m %s --attn-backend npu --npu-config %s", model_path,
             conf);
    expect_usage_error(args, ":3: bad value 'wide' for link_bytes");
    unlink(conf);
    snprintf(args, sizeof(args), "serve -m %s --port 0 --attn-backend npu --npu-tenants '5x5,4x4'",
             model_path);
    static struct result r;
    run(&r, args);
    cr_assert_eq(r.status, 2, "a 4x4 does not fit beside a 5x5 on the 6x6 chip: %s", r.err);
    cr_assert(strstr(r.err, "does not fit"), "%s", r.err);
}

Test(cli, sim_vnpu_reproduces_the_mapping_example)
{
    static struct result r;
    run(&r, "sim vnpu");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    /* the best-effort mapper and zig-zag place both 3x3s on the 5x5 chip; MIG-style slices one */
    const char *best = strstr(r.out, "best-effort mapper:");
    const char *mig = strstr(r.out, "MIG-style slices:");
    cr_assert(best && mig, "%s", r.out);
    cr_assert(strstr(best, "B: placed") && strstr(best, "B: placed") < mig, "%s", r.out);
    cr_assert(strstr(mig, "B: refused"), "%s", r.out);
    cr_assert(strstr(r.out, "best-effort vs zig-zag: +"), "%s", r.out);
    cr_assert(strstr(r.out, "vNPU vs MIG-style: up to"), "%s", r.out);
    expect_usage_error("sim vnpu --model gpt5", "--model");
    expect_usage_error("sim tpu", "unknown reproduction");
}

/* --attn-backend pim: the simulated DIMM-PIM computes the decode attention rank by rank; every
 * model in ../shared/models prints the same tokens and log-probabilities as without it, and the
 * simulated time goes to stderr. A bad --pim-config names its line. */
Test(cli, generate_with_pim_attention_prints_the_same_logprobs, .timeout = 300, .init = setup)
{
    static struct result a, b;
    char args[2048];
    for (size_t i = 0; i < HS_TEST_N_SHARED_MODELS; i++) {
        snprintf(args, sizeof(args),
                 "generate -m %s/%s -p 'Once upon a time' -n 12 --temp 0 --logprobs 3 -t 1",
                 getenv("HS_MODELS_DIR"), hs_test_shared_models[i]);
        run(&a, args);
        cr_assert_eq(a.status, 0, "%s: %s", hs_test_shared_models[i], a.err);
        snprintf(args + strlen(args), sizeof(args) - strlen(args), " --attn-backend pim");
        run(&b, args);
        cr_assert_eq(b.status, 0, "%s: %s", hs_test_shared_models[i], b.err);
        cr_assert_str_eq(a.out, b.out, "%s", hs_test_shared_models[i]);
        cr_assert(strstr(b.err, "attention backend pim:") && strstr(b.err, "ms simulated"),
                  "%s: %s", hs_test_shared_models[i], b.err);
    }
    char cfg[] = "/tmp/hs-cli-pim-XXXXXX";
    const int fd = mkstemp(cfg);
    cr_assert(fd >= 0);
    const char text[] = "preset = rpim\nchannels = many\n";
    cr_assert_eq(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    snprintf(args, sizeof(args), "generate -m %s -p hi --attn-backend pim --pim-config %s",
             model_path, cfg);
    expect_usage_error(args, "line 2: channels: 'many' is not a number");
    snprintf(args, sizeof(args), "serve -m %s --attn-backend pim --pim-config %s", model_path, cfg);
    expect_usage_error(args, "line 2");
    unlink(cfg);
}
