/* Internals shared by the loadgen-*.c files and tests. */
#ifndef HS_BENCH_LOADGEN_IMPL_H
#define HS_BENCH_LOADGEN_IMPL_H

#include "bench/loadgen-core.h"

/* Sequential, seeded request generator. Same config (seed included): same sequence of bodies. */
struct hs__lg_workload;

/* Returns new (free with hs__lg_workload_destroy). HS_E_IO / HS_E_FORMAT for a bad JSONL file,
 * HS_E_INVAL for an empty one or unusable lengths. */
hs_status hs__lg_workload_create(const struct hs_lg_config *cfg, struct hs__lg_workload **out,
                                 struct hs_error *err);
void hs__lg_workload_destroy(struct hs__lg_workload *w);

/* Next request body (returns new JSON text, free()) and its estimated prompt tokens. */
hs_status hs__lg_workload_next(struct hs__lg_workload *w, char **body_out,
                               int64_t *input_tokens_out);

/* Words in s, split on whitespace: the harness's token estimate. */
int64_t hs__lg_count_words(const char *s);

/* Computes every aggregate of rep from rep->reqs, rep->duration_s and the SLOs. */
void hs__lg_report_finish(struct hs_lg_report *rep);

#endif
