/* Expert placement rules ("REGEX=BACKEND[:N],...", see hs_context_params.expert_placement):
 * parsing them, creating the further backend instances they name, and telling moe/ where each
 * expert runs. Kept apart from the forward pass, which only reads the result. */
#include "model/model-impl.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The backend a placement rule names: "NAME" or "NAME:INSTANCE" (instance 0, the default, of
 * the context's own backend type is the context's backend; any other is created once and shared
 * by every expert placed there, e.g. "cpu:1" for a second CPU backend with its own threads). */
static hs_status placement_backend(struct hs_context *ctx, const char *spec,
                                   const struct hs_backend_params *bp, struct hs_backend **out,
                                   struct hs_error *err)
{
    char name[64];
    long instance = 0;
    const char *colon = strchr(spec, ':');
    const size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    if (len == 0 || len >= sizeof(name)) {
        return hs_error_set(err, HS_E_INVAL, "expert placement backend '%s' is not NAME[:N]", spec);
    }
    for (size_t i = 0; i < len; i++) {
        name[i] = (char)tolower((unsigned char)spec[i]); /* llama.cpp writes "CPU" */
    }
    name[len] = '\0';
    if (colon) {
        char *end = NULL;
        instance = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || instance < 0 || instance > 64) {
            return hs_error_set(err, HS_E_INVAL,
                                "expert placement backend '%s': the instance after ':' must be a "
                                "number from 0 to 64",
                                spec);
        }
    }
    if (instance == 0 && strcmp(name, hs_backend_name(ctx->be)) == 0) {
        *out = ctx->be;
        return HS_OK;
    }
    for (int32_t i = 0; i < ctx->n_extra_be; i++) {
        if (strcasecmp(ctx->extra_names[i], spec) == 0 ||
            (instance == 0 && !colon && strcmp(ctx->extra_names[i], name) == 0)) {
            *out = ctx->extra_be[i];
            return HS_OK;
        }
    }
    struct hs_backend **grown =
        realloc(ctx->extra_be, (size_t)(ctx->n_extra_be + 1) * sizeof(*grown));
    if (grown) {
        ctx->extra_be = grown;
    }
    char **grown_names =
        realloc(ctx->extra_names, (size_t)(ctx->n_extra_be + 1) * sizeof(*grown_names));
    if (grown_names) {
        ctx->extra_names = grown_names;
    }
    char *copy = strdup(spec);
    for (char *c = copy; c && *c && *c != ':'; c++) {
        *c = (char)tolower((unsigned char)*c);
    }
    if (!grown || !grown_names || !copy) {
        free(copy);
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    struct hs_backend *be = NULL;
    hs_status st = hs_backend_create(name, bp, &be);
    if (st == HS_E_NOENT) {
        free(copy);
        char names[128] = "";
        for (int i = 0; i < hs_backend_reg_count(); i++) {
            snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "",
                     hs_backend_reg_name(i));
        }
        return hs_error_set(err, HS_E_INVAL,
                            "expert placement names the backend '%s', which is not compiled in "
                            "(backends: %s)",
                            name, names);
    }
    if (st != HS_OK) {
        free(copy);
        return hs_error_set(err, st, "cannot create backend '%s' for experts: %s", spec,
                            hs_status_str(st));
    }
    ctx->extra_be[ctx->n_extra_be] = be;
    ctx->extra_names[ctx->n_extra_be] = copy;
    ctx->n_extra_be++;
    *out = be;
    return HS_OK;
}

/* Expert placement rules "REGEX=BACKEND,..." (see hs_context_params.expert_placement). */
hs_status hs__place_experts(struct hs_context *ctx, const struct hs_context_params *p,
                            struct hs_error *err)
{
    if (!p->expert_placement || !p->expert_placement[0]) {
        return HS_OK;
    }
    const struct hs_model *m = ctx->model;
    const struct hs_model_hparams *hp = &m->hp;
    hs_status st = HS_OK;
    char *rules = strdup(p->expert_placement);
    if (!rules) {
        return hs_error_set(err, HS_E_NOMEM, "out of memory");
    }
    enum { MAX_RULES = 32 };
    regex_t re[MAX_RULES];
    struct hs_backend *be[MAX_RULES];
    int n_rules = 0;
    char *save = NULL;
    for (char *rule = strtok_r(rules, ",", &save); rule; rule = strtok_r(NULL, ",", &save)) {
        char *eq = strrchr(rule, '=');
        if (!eq || eq == rule || !eq[1]) {
            st = hs_error_set(err, HS_E_INVAL,
                              "expert placement rule '%s' is not REGEX=BACKEND (e.g. "
                              "'blk\\.[0-9]+\\.expert\\.[0-3]=cpu')",
                              rule);
            goto done;
        }
        if (n_rules == MAX_RULES) {
            st = hs_error_set(err, HS_E_INVAL, "more than %d expert placement rules", MAX_RULES);
            goto done;
        }
        *eq = '\0';
        int rc = regcomp(&re[n_rules], rule, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char why[128];
            regerror(rc, &re[n_rules], why, sizeof(why));
            st = hs_error_set(err, HS_E_INVAL, "expert placement pattern '%s': %s", rule, why);
            goto done;
        }
        n_rules++;
        st = placement_backend(ctx, eq + 1, &p->backend_params, &be[n_rules - 1], err);
        if (st != HS_OK) {
            goto done;
        }
    }
    for (int32_t il = 0; il < hp->n_layer; il++) {
        if (!m->layers[il].ffn_gate_inp.data) {
            continue;
        }
        const bool shared = m->layers[il].moe.gate_shexp != NULL;
        for (int32_t e = shared ? -1 : 0; e < hp->router.n_expert; e++) {
            /* The expert's own name, then the tensors it lives in (as llama.cpp names them). */
            static const char *const parts[3] = {"gate", "up", "down"};
            char names[4][64];
            if (e < 0) {
                snprintf(names[0], sizeof(names[0]), "blk.%d.expert.shared", il);
            } else {
                snprintf(names[0], sizeof(names[0]), "blk.%d.expert.%d", il, e);
            }
            for (int i = 0; i < 3; i++) {
                snprintf(names[i + 1], sizeof(names[i + 1]), "blk.%d.ffn_%s_%s.weight", il,
                         parts[i], e < 0 ? "shexp" : "exps");
            }
            int hit = -1;
            for (int r = 0; r < n_rules && hit < 0; r++) {
                for (int i = 0; i < 4 && hit < 0; i++) {
                    hit = regexec(&re[r], names[i], 0, NULL, 0) == 0 ? r : -1;
                }
            }
            if (hit < 0) {
                continue;
            }
            /* The backend must run this expert's weight types (checked now, not mid-request). */
            const struct hs_moe_layer *w = &m->layers[il].moe;
            const struct hs_tensor *ts[3] = {e < 0 ? w->gate_shexp : w->gate_exps,
                                             e < 0 ? w->up_shexp : w->up_exps,
                                             e < 0 ? w->down_shexp : w->down_exps};
            for (int i = 0; i < 3; i++) {
                if (!hs_backend_supports(be[hit], e < 0 ? HS_OP_FFN : HS_OP_MOE_FFN, ts[i]->type)) {
                    st = hs_error_set(err, HS_E_NOTSUP, "backend '%s' cannot run %s (%s weights)",
                                      hs_backend_name(be[hit]), names[0], hs_type_str(ts[i]->type));
                    goto done;
                }
            }
            const hs_status pst = hs_moe_set_backend(ctx->moe, il, e, be[hit]);
            HS_ASSERT(pst == HS_OK);
        }
    }
done:
    for (int r = 0; r < n_rules; r++) {
        regfree(&re[r]);
    }
    free(rules);
    return st;
}
