/* Request generation: random / fixed word prompts, JSONL files, MobiAgent-shaped agent traces. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/loadgen-impl.h"
#include "common/common.h"

/* One word per intended token: short, common English words, which BPE vocabularies of current
 * models encode as one token each when preceded by a space. */
static const char *const g_words[] = {
    "the", "of", "and", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are",
    "with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by",
    "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when",
    "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if",
    "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these",
    "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could",
    "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know",
    "water", "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any",
    "new", "work", "part", "take", "get", "place", "made", "live", "where", "after", "back",
    "little", "only", "round", "man", "year", "came", "show", "every", "good", "me", "give",
    "our", "under", "name", "very", "through", "just", "form", "great", "think", "say", "help",
    "low", "line", "before", "turn", "cause", "same", "mean", "move", "right", "boy", "old",
    "too", "does", "tell", "set", "three", "want", "air", "well", "also", "play", "small", "end",
    "put", "home", "read", "hand", "port", "large", "add", "even", "land", "here", "must", "big",
    "high", "such", "follow", "act", "why", "ask", "men", "change", "went", "light", "kind",
    "off", "need", "house", "picture", "try", "us", "again", "animal", "point", "mother",
    "world", "near", "build", "self", "earth", "father", "head", "stand", "own", "page",
    "should", "country", "found", "answer", "school", "grow", "study", "still", "learn",
    "plant", "cover", "food", "sun", "four", "between", "state", "keep", "eye", "never", "last",
    "let", "thought", "city", "tree", "cross", "farm", "hard", "start", "might", "story", "saw",
    "far", "sea", "draw", "left", "late", "run", "while", "press", "close", "night", "real",
    "life", "few", "north", "open", "seem", "together", "next", "white", "children", "begin",
};

static const char *const g_agent_tasks[] = {
    "Open the Settings app and turn on Wi-Fi.",
    "Send a message saying 'on my way' to Alice in the Messages app.",
    "Search for a coffee shop nearby in Maps and start navigation to the closest one.",
    "Set an alarm for 7:30 tomorrow morning in the Clock app.",
    "Order a large pepperoni pizza for delivery in the food delivery app.",
    "Find the cheapest flight from Shanghai to Beijing next Friday in the travel app.",
    "Play the most recent episode of the first podcast in the podcast app.",
    "Add a calendar event called 'team sync' at 3 pm on Monday.",
};

static const char g_agent_system[] =
    "You are a mobile phone GUI agent. You see the current screen of an Android phone as a list "
    "of UI elements with their bounds, and you operate the phone to complete the user's task. "
    "At every step answer with exactly one JSON object and nothing else, in the form "
    "{\"reasoning\": \"<why this action>\", \"action\": \"<click|swipe|type|wait|done>\", "
    "\"params\": {...}}. For click give \"x\" and \"y\" in pixels; for swipe give \"direction\"; "
    "for type give \"text\"; for wait and done give no params. Use the history of your previous "
    "actions to avoid repeating yourself, and answer done when the task is complete.";

enum lg_wl_kind { WL_WORDS, WL_JSONL, WL_AGENT };

struct hs__lg_workload {
    const struct hs_lg_config *cfg;
    struct hs_rng rng;
    json_t **lines; /* [n_lines] owned, JSONL */
    size_t n_lines, cap_lines, next_line;
    /* agent episode state */
    int agent_task, agent_step, agent_len;
    char **history; /* [agent_step] owned answer texts */
};

int64_t hs__lg_count_words(const char *s)
{
    int64_t n = 0;
    bool in = false;
    for (; *s; s++) {
        bool sp = isspace((unsigned char)*s) != 0;
        if (!sp && !in) {
            n++;
        }
        in = !sp;
    }
    return n;
}

/* ---- small growable string ---- */

struct lg_str {
    char *p;
    size_t len, cap;
};

static bool str_add(struct lg_str *s, const char *t)
{
    size_t n = strlen(t);
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        while (cap < s->len + n + 1) {
            cap *= 2;
        }
        char *p = realloc(s->p, cap);
        if (!p) {
            return false;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, t, n + 1);
    s->len += n;
    return true;
}

static int draw_len(struct hs__lg_workload *w, int len)
{
    if (w->cfg->workload != HS_LG_WORKLOAD_RANDOM || w->cfg->range_ratio <= 0) {
        return len;
    }
    double lo = floor(len * (1.0 - w->cfg->range_ratio));
    double hi = ceil(len * (1.0 + w->cfg->range_ratio));
    if (lo < 1) {
        lo = 1;
    }
    int v = (int)lo + (int)(hs_rng_uniform(&w->rng) * (hi - lo + 1));
    return v > (int)hi ? (int)hi : v;
}

static char *random_words(struct hs__lg_workload *w, int n)
{
    struct lg_str s = {0};
    if (!str_add(&s, "")) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const char *word = g_words[hs_rng_next(&w->rng) % HS_ARRAY_LEN(g_words)];
        if ((i && !str_add(&s, " ")) || !str_add(&s, word)) {
            free(s.p);
            return NULL;
        }
    }
    return s.p;
}

/* ---- common body fields ---- */

static int set_common(const struct hs_lg_config *cfg, json_t *body, int out_len, bool override)
{
    int rc = 0;
    if (cfg->model && (override || !json_object_get(body, "model"))) {
        rc |= json_object_set_new(body, "model", json_string(cfg->model));
    }
    if (out_len > 0 && (override || !json_object_get(body, "max_tokens"))) {
        rc |= json_object_set_new(body, "max_tokens", json_integer(out_len));
        rc |= json_object_set_new(body, "min_tokens", json_integer(out_len));
        rc |= json_object_set_new(body, "ignore_eos", json_true());
    }
    rc |= json_object_set_new(body, "stream", json_boolean(cfg->stream));
    if (cfg->stream) {
        rc |= json_object_set_new(body, "stream_options",
                                  json_pack("{s:b}", "include_usage", 1));
    } else {
        json_object_del(body, "stream_options");
    }
    return rc;
}

static json_t *body_from_text(const struct hs_lg_config *cfg, const char *system, const char *user)
{
    json_t *body = json_object();
    if (!body) {
        return NULL;
    }
    int rc = 0;
    if (cfg->endpoint == HS_LG_ENDPOINT_CHAT) {
        json_t *msgs = json_array();
        if (system) {
            rc |= json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system",
                                                        "content", system));
        }
        rc |= json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user));
        rc |= json_object_set_new(body, "messages", msgs);
    } else {
        json_t *prompt = system ? json_sprintf("%s\n\n%s", system, user) : json_string(user);
        rc |= json_object_set_new(body, "prompt", prompt);
    }
    if (rc) {
        json_decref(body);
        return NULL;
    }
    return body;
}

/* ---- JSONL ---- */

static hs_status load_jsonl(struct hs__lg_workload *w, const char *path, struct hs_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return hs_error_set(err, HS_E_IO, "%s: %s", path, strerror(errno));
    }
    hs_status st = HS_OK;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && isspace((unsigned char)line[n - 1])) {
            line[--n] = 0;
        }
        if (n == 0) {
            continue;
        }
        json_error_t jerr;
        json_t *v = json_loadb(line, (size_t)n, 0, &jerr);
        if (!v || !json_is_object(v)) {
            json_decref(v);
            st = hs_error_set(err, HS_E_FORMAT, "%s:%d: not a JSON object%s%s", path, lineno,
                              v ? "" : ": ", v ? "" : jerr.text);
            goto fail;
        }
        if (w->n_lines == w->cap_lines) {
            size_t c = w->cap_lines ? w->cap_lines * 2 : 64;
            json_t **p = realloc(w->lines, c * sizeof(*p));
            if (!p) {
                json_decref(v);
                st = HS_E_NOMEM;
                goto fail;
            }
            w->lines = p;
            w->cap_lines = c;
        }
        w->lines[w->n_lines++] = v;
    }
    if (w->n_lines == 0) {
        st = hs_error_set(err, HS_E_INVAL, "%s: no requests in file", path);
    }
fail:
    free(line);
    fclose(f);
    return st;
}

static int64_t estimate_body_tokens(json_t *body)
{
    int64_t n = 0;
    json_t *prompt = json_object_get(body, "prompt");
    if (json_is_string(prompt)) {
        n += hs__lg_count_words(json_string_value(prompt));
    }
    json_t *msgs = json_object_get(body, "messages");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        json_t *c = json_object_get(m, "content");
        if (json_is_string(c)) {
            n += hs__lg_count_words(json_string_value(c));
        }
    }
    return n;
}

static json_t *jsonl_next(struct hs__lg_workload *w)
{
    json_t *src = w->lines[w->next_line];
    w->next_line = (w->next_line + 1) % w->n_lines;
    json_t *prompt = json_object_get(src, "prompt");
    json_t *body;
    if (w->cfg->endpoint == HS_LG_ENDPOINT_CHAT && !json_object_get(src, "messages") &&
        json_is_string(prompt)) {
        body = body_from_text(w->cfg, NULL, json_string_value(prompt));
        json_t *rest = json_deep_copy(src);
        json_object_del(rest, "prompt");
        json_object_update_missing(body, rest);
        json_decref(rest);
    } else {
        body = json_deep_copy(src);
    }
    return body;
}

/* ---- agent ---- */

static char *agent_answer(struct hs__lg_workload *w)
{
    static const char *const actions[] = {"click", "click", "click", "swipe", "type", "wait"};
    static const char *const dirs[] = {"up", "down", "left", "right"};
    const char *action = w->agent_step + 1 >= w->agent_len
                             ? "done"
                             : actions[hs_rng_next(&w->rng) % HS_ARRAY_LEN(actions)];
    char *reason = random_words(w, 12 + (int)(hs_rng_next(&w->rng) % 8));
    if (!reason) {
        return NULL;
    }
    json_t *params = json_object();
    if (!strcmp(action, "click")) {
        json_object_set_new(params, "x", json_integer((json_int_t)(hs_rng_next(&w->rng) % 1080)));
        json_object_set_new(params, "y", json_integer((json_int_t)(hs_rng_next(&w->rng) % 2400)));
    } else if (!strcmp(action, "swipe")) {
        json_object_set_new(params, "direction",
                            json_string(dirs[hs_rng_next(&w->rng) % HS_ARRAY_LEN(dirs)]));
    } else if (!strcmp(action, "type")) {
        char *t = random_words(w, 3);
        json_object_set_new(params, "text", json_string(t ? t : ""));
        free(t);
    }
    json_t *ans = json_pack("{s:s,s:s,s:o}", "reasoning", reason, "action", action, "params",
                            params);
    free(reason);
    if (!ans) {
        return NULL;
    }
    char *text = json_dumps(ans, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ans);
    return text;
}

static void agent_reset(struct hs__lg_workload *w)
{
    for (int i = 0; i < w->agent_step; i++) {
        free(w->history[i]);
    }
    w->agent_step = 0;
    w->agent_task = (int)(hs_rng_next(&w->rng) % HS_ARRAY_LEN(g_agent_tasks));
    w->agent_len = 4 + (int)(hs_rng_next(&w->rng) % 9); /* 4..12 steps */
}

static json_t *agent_next(struct hs__lg_workload *w, int64_t *input_tokens)
{
    if (w->agent_step >= w->agent_len) {
        agent_reset(w);
    }
    struct lg_str s = {0};
    char num[32];
    bool ok = str_add(&s, "Task: ") && str_add(&s, g_agent_tasks[w->agent_task]) &&
              str_add(&s, "\n\nHistory of your previous actions:\n");
    if (w->agent_step == 0) {
        ok = ok && str_add(&s, "(none)\n");
    }
    for (int i = 0; i < w->agent_step && ok; i++) {
        snprintf(num, sizeof(num), "%d. ", i + 1);
        ok = str_add(&s, num) && str_add(&s, w->history[i]) && str_add(&s, "\n");
    }
    /* The screen changes a little each step: a short tail of fresh words. */
    char *screen = ok ? random_words(w, 24) : NULL;
    snprintf(num, sizeof(num), "%d", w->agent_step + 1);
    ok = screen && str_add(&s, "\nCurrent screen (step ") && str_add(&s, num) &&
         str_add(&s, "): ") && str_add(&s, screen) &&
         str_add(&s, "\n\nAnswer with the next action as one JSON object.");
    free(screen);
    json_t *body = NULL;
    char *ans = NULL;
    if (!ok) {
        goto done;
    }
    body = body_from_text(w->cfg, g_agent_system, s.p);
    if (!body || json_object_set_new(body, "temperature", json_real(0.0))) {
        json_decref(body);
        body = NULL;
        goto done;
    }
    *input_tokens = hs__lg_count_words(g_agent_system) + hs__lg_count_words(s.p);
    /* What the agent "answered": appended to the history of the next step. */
    ans = agent_answer(w);
    if (!ans) {
        json_decref(body);
        body = NULL;
        goto done;
    }
    w->history[w->agent_step++] = ans;
done:
    free(s.p);
    return body;
}

/* ---- public-ish ---- */

hs_status hs__lg_workload_create(const struct hs_lg_config *cfg, struct hs__lg_workload **out,
                                 struct hs_error *err)
{
    *out = NULL;
    hs_status st = HS_OK;
    struct hs__lg_workload *w = calloc(1, sizeof(*w));
    if (!w) {
        return HS_E_NOMEM;
    }
    w->cfg = cfg;
    hs_rng_seed(&w->rng, cfg->seed);
    switch (cfg->workload) {
    case HS_LG_WORKLOAD_RANDOM:
    case HS_LG_WORKLOAD_FIXED:
        if (cfg->input_len < 1) {
            st = hs_error_set(err, HS_E_INVAL, "input length must be at least 1");
            goto fail;
        }
        if (cfg->range_ratio < 0 || cfg->range_ratio > 1) {
            st = hs_error_set(err, HS_E_INVAL, "range ratio must be in [0, 1]");
            goto fail;
        }
        break;
    case HS_LG_WORKLOAD_JSONL:
        if (!cfg->jsonl_path) {
            st = hs_error_set(err, HS_E_INVAL, "jsonl workload needs a file");
            goto fail;
        }
        st = load_jsonl(w, cfg->jsonl_path, err);
        if (st != HS_OK) {
            goto fail;
        }
        break;
    case HS_LG_WORKLOAD_AGENT:
        w->history = calloc(16, sizeof(char *));
        if (!w->history) {
            st = HS_E_NOMEM;
            goto fail;
        }
        agent_reset(w);
        break;
    default:
        st = hs_error_set(err, HS_E_INVAL, "unknown workload");
        goto fail;
    }
    *out = w;
    return HS_OK;
fail:
    hs__lg_workload_destroy(w);
    return st;
}

void hs__lg_workload_destroy(struct hs__lg_workload *w)
{
    if (!w) {
        return;
    }
    for (size_t i = 0; i < w->n_lines; i++) {
        json_decref(w->lines[i]);
    }
    free(w->lines);
    if (w->history) {
        for (int i = 0; i < w->agent_step; i++) {
            free(w->history[i]);
        }
        free(w->history);
    }
    free(w);
}

hs_status hs__lg_workload_next(struct hs__lg_workload *w, char **body_out,
                               int64_t *input_tokens_out)
{
    *body_out = NULL;
    const struct hs_lg_config *cfg = w->cfg;
    json_t *body = NULL;
    int64_t in_tokens = 0;
    int out_len = cfg->output_len;
    bool override = true;
    if (cfg->workload == HS_LG_WORKLOAD_JSONL) {
        body = jsonl_next(w);
        if (body) {
            in_tokens = estimate_body_tokens(body);
        }
        override = false;
    } else if (cfg->workload == HS_LG_WORKLOAD_AGENT) {
        body = agent_next(w, &in_tokens);
    } else {
        int in_len = draw_len(w, cfg->input_len);
        out_len = cfg->output_len > 0 ? draw_len(w, cfg->output_len) : 0;
        char *text = random_words(w, in_len);
        if (text) {
            body = body_from_text(cfg, NULL, text);
        }
        free(text);
        in_tokens = in_len;
    }
    if (!body) {
        return HS_E_NOMEM;
    }
    hs_status st = HS_OK;
    if (set_common(cfg, body, out_len, override)) {
        st = HS_E_NOMEM;
        goto done;
    }
    *body_out = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!*body_out) {
        st = HS_E_NOMEM;
        goto done;
    }
    *input_tokens_out = in_tokens;
done:
    json_decref(body);
    return st;
}

hs_status hs_lg_build_request(const struct hs_lg_config *cfg, int index, char **body_out,
                              int64_t *input_tokens_out, struct hs_error *err)
{
    *body_out = NULL;
    struct hs__lg_workload *w = NULL;
    hs_status st = hs__lg_workload_create(cfg, &w, err);
    if (st != HS_OK) {
        return st;
    }
    for (int i = 0; i <= index; i++) {
        free(*body_out);
        *body_out = NULL;
        st = hs__lg_workload_next(w, body_out, input_tokens_out);
        if (st != HS_OK) {
            break;
        }
    }
    hs__lg_workload_destroy(w);
    return st;
}
