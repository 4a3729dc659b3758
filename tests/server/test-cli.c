/* The hetserve binary end to end: bad input gives one line on stderr and exit status 2; good
 * input generates text and JSON log-probability lines. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* --attn-backend pim: the simulated DIMM-PIM computes the decode attention rank by rank; every
 * model in ../shared/models prints the same tokens and log-probabilities as without it, and the
 * simulated time goes to stderr. A bad --pim-config names its line. */
Test(cli, generate_with_pim_attention_prints_the_same_logprobs, .timeout = 300, .init = setup)
{
    static const char *const files[] = {
        "stories260K.gguf",      "tiny-f32.gguf",          "tiny-f16.gguf",
        "tiny-q8_0.gguf",        "tiny-q4_k_m.gguf",       "qwen2-bpe-f32.gguf",
        "qwen3-bpe-q8_0.gguf",   "llama3-bpe-f32.gguf",    "qwen3-vocab-f16.gguf",
        "moe-mixtral-mini-f32.gguf", "moe-qwen2-mini-f32.gguf", "moe-qwen2-mini-q8_0.gguf",
        "moe-qwen3-mini-q8_0.gguf",
    };
    static struct result a, b;
    char args[2048];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(args, sizeof(args),
                 "generate -m %s/%s -p 'Once upon a time' -n 12 --temp 0 --logprobs 3 -t 1",
                 getenv("HS_MODELS_DIR"), files[i]);
        run(&a, args);
        cr_assert_eq(a.status, 0, "%s: %s", files[i], a.err);
        snprintf(args + strlen(args), sizeof(args) - strlen(args), " --attn-backend pim");
        run(&b, args);
        cr_assert_eq(b.status, 0, "%s: %s", files[i], b.err);
        cr_assert_str_eq(a.out, b.out, "%s", files[i]);
        cr_assert(strstr(b.err, "attention backend pim:") && strstr(b.err, "ms simulated"),
                  "%s: %s", files[i], b.err);
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
    snprintf(args, sizeof(args), "serve -m %s --attn-backend pim --pim-config %s", model_path,
             cfg);
    expect_usage_error(args, "line 2");
    unlink(cfg);
}
