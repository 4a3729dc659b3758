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
    snprintf(args, sizeof(args),
             "serve -m %s --port 0 --attn-backend npu --npu-tenants '5x5,4x4'", model_path);
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
