/* hetserve-bench against the real `hetserve serve` (stories260K from ../shared/models): a short
 * closed-loop run over chat and completions, with the JSON report's fields checked against what
 * was asked for. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct server {
    pid_t pid;
    int port;
};

/* Starts `hetserve serve --port 0` and reads the port from its "listening on" line. */
static void server_start(struct server *s)
{
    const char *build = getenv("HS_BUILD_DIR"), *models = getenv("HS_MODELS_DIR");
    cr_assert(build && models, "HS_BUILD_DIR and HS_MODELS_DIR must be set");
    char bin[1024], model[1024];
    snprintf(bin, sizeof(bin), "%s/api/hetserve", build);
    snprintf(model, sizeof(model), "%s/stories260K.gguf", models);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    s->pid = fork();
    cr_assert(s->pid >= 0);
    if (s->pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(bin, bin, "serve", "-m", model, "--port", "0", "--ctx", "2048", "--parallel", "8",
              "-t", "1", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[512];
    s->port = 0;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "listening on 127.0.0.1:%d", &s->port) == 1) {
            break;
        }
    }
    fclose(f);
    cr_assert(s->port > 0, "the server did not report its port");
}

static void server_stop(struct server *s)
{
    kill(s->pid, SIGTERM);
    int st = 0;
    waitpid(s->pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "hetserve serve did not exit cleanly on SIGTERM");
}

static json_t *run_bench(const struct server *s, const char *extra, const char *json_path)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "%s/bench/hetserve-bench --base-url http://127.0.0.1:%d --quiet --seed 3 "
             "--result-json %s %s > /dev/null",
             getenv("HS_BUILD_DIR"), s->port, json_path, extra);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "hetserve-bench failed: %s", cmd);
    json_error_t jerr;
    json_t *r = json_load_file(json_path, 0, &jerr);
    cr_assert(r, "cannot read %s: %s", json_path, jerr.text);
    unlink(json_path);
    return r;
}

static double num(const json_t *r, const char *key)
{
    const json_t *v = json_object_get(r, key);
    cr_assert(json_is_number(v), "report field '%s' is missing or not a number", key);
    return json_number_value(v);
}

Test(loadgen_hetserve, completions_and_chat_runs_report_every_field, .timeout = 180)
{
    struct server s;
    server_start(&s);
    char path[64];
    snprintf(path, sizeof(path), "/tmp/hs-lg-%d.json", (int)getpid());

    json_t *r = run_bench(&s,
                          "--endpoint completions --workload fixed --input-len 32 "
                          "--output-len 16 --concurrency 4 --num-requests 12 --warmup 2",
                          path);
    cr_assert_eq(num(r, "completed"), 12);
    cr_assert_eq(num(r, "total_output_tokens"), 12 * 16, "ignore_eos + max_tokens: 16 each");
    cr_assert(num(r, "total_input_tokens") >= 12 * 32, "usage.prompt_tokens counted");
    const char *positive[] = {
        "duration",       "request_throughput", "output_throughput", "total_token_throughput",
        "mean_ttft_ms",   "median_ttft_ms",     "p99_ttft_ms",       "mean_tpot_ms",
        "median_tpot_ms", "p99_tpot_ms",        "mean_itl_ms",       "median_itl_ms",
        "p99_itl_ms",     "mean_e2el_ms",       "median_e2el_ms",    "p99_e2el_ms"};
    for (size_t i = 0; i < sizeof(positive) / sizeof(positive[0]); i++) {
        cr_assert(num(r, positive[i]) > 0, "%s should be positive", positive[i]);
    }
    cr_assert(num(r, "p99_ttft_ms") >= num(r, "median_ttft_ms"));
    cr_assert(num(r, "mean_e2el_ms") >= num(r, "mean_ttft_ms"));
    json_decref(r);

    /* The agent workload over chat (the MobiAgent shape): everything completes, no errors. */
    r = run_bench(&s, "--endpoint chat --workload agent --concurrency 2 --num-requests 6", path);
    cr_assert_eq(num(r, "completed"), 6);
    json_t *errors = json_object_get(r, "errors");
    if (json_is_integer(errors)) {
        cr_assert_eq(json_integer_value(errors), 0);
    } else {
        cr_assert(json_is_object(errors), "errors should be a count or an object of counts");
        const char *k;
        json_t *v;
        json_object_foreach(errors, k, v)
        {
            cr_assert_eq(json_integer_value(v), 0, "errors.%s", k);
        }
    }
    json_decref(r);
    server_stop(&s);
}
