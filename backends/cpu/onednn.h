/* oneDNN beside the CPU backend's own kernels: the F32 / F16 / BF16 products of prompt-sized
 * batches (HS__ONEDNN_MIN_ROWS activation rows or more) as one GEMM each. Internal to
 * backends/cpu; compiled only where meson found oneDNN (HS_HAVE_ONEDNN).
 *
 * libdnnl is loaded with dlopen() on the first hs__onednn_create, after OMP_WAIT_POLICY=passive
 * and GOMP_SPINCOUNT=0 were put in the environment (unless already set): Debian builds it on
 * OpenMP, whose threads would otherwise spin after every GEMM on the cores the backend's pool
 * needs, and libgomp reads those variables once, when it is loaded. The CPU backend makes one
 * on its first product of that size when the environment had HS_ONEDNN=1 at its creation. The
 * build thus needs oneDNN's headers only; a machine without the library runs the backend's own
 * kernels.
 *
 * Paths: F32 weights run oneDNN's f32 matmul on the activations as they are. BF16 weights run
 * its bf16 matmul on the activations already rounded to BF16 (as the backend's kernels use
 * them) where oneDNN has an optimised bf16 kernel for this CPU (AVX512_BF16 / AMX); F16 weights,
 * and BF16 where it has none, are widened to f32 a panel of rows at a time on the backend's pool
 * (activations from their F16 / BF16 rounding, so products are exact in f32) and run through
 * the f32 matmul. Results equal the backend's kernels' up to the order of the sums. */
#ifndef HS_BACKENDS_CPU_ONEDNN_H
#define HS_BACKENDS_CPU_ONEDNN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend-impl.h"
#include "backends/cpu/pool.h"

/* Activation rows from which products go to oneDNN (bench-onednn's prefill and batched decode
 * rows; see the README's Benchmarks). */
#define HS__ONEDNN_MIN_ROWS 64

struct hs__onednn;

/* Loads libdnnl (first call in the process) and makes an engine and stream for one CPU backend
 * whose pool (borrowed; outlives the result) converts weight panels; oneDNN runs on as many
 * OpenMP threads as the pool has. HS_E_NOTSUP when the library or one of its functions could
 * not be loaded (logged once), HS_E_NOMEM, HS_E_DEVICE
 * when oneDNN fails; *out stays NULL then. Thread: engine only. */
hs_status hs__onednn_create(struct hs_pool *pool, struct hs__onednn **out);

/* Frees what hs__onednn_create made; NULL does nothing. Thread: engine only. */
void hs__onednn_destroy(struct hs__onednn *dnn);

/* Sets the activation rows from which products go to oneDNN (HS__ONEDNN_MIN_ROWS at creation;
 * bench-onednn sets 1 to time oneDNN on batched decode too). Thread: engine only. */
void hs__onednn_set_min_rows(struct hs__onednn *dnn, int64_t min_rows);

/* Whether hs__onednn_matmul takes weights of type t over n_rows activation rows; with dnn NULL,
 * whether one made now would (HS__ONEDNN_MIN_ROWS). */
bool hs__onednn_wants(const struct hs__onednn *dnn, enum hs_type t, int64_t n_rows);

/* y = x w^T: w [n_out][n_in] of type F32, F16 or BF16; x [n_rows][n_in] in w's vec_dot_type
 * (f32 for F32, F16 for F16, BF16 for BF16), rows x_stride bytes apart; y [n_rows][n_out] f32
 * (rows y->nb[1] apart), overwritten. HS_E_NOTSUP when hs__onednn_wants says no (y untouched),
 * HS_E_NOMEM, HS_E_DEVICE when oneDNN failed (y undefined). Runs on the calling thread, the
 * OpenMP threads and the pool. Thread: engine only. */
hs_status hs__onednn_matmul(struct hs__onednn *dnn, const struct hs_tensor *w, const void *x,
                            size_t x_stride, struct hs_tensor *y);

/* A function of the loaded libdnnl by name (e.g. "dnnl_sgemm", for bench-onednn), or NULL when
 * the library is not loaded or lacks it. Thread: any, after a successful hs__onednn_create. */
void *hs__onednn_sym(const char *name);

/* oneDNN's implementation for a type's matmul on this CPU, as its verbose output names it
 * ("brg:avx512_core_bf16", "ref:any", ...; "-" when it has none), for bench-onednn's header.
 * Borrowed from oneDNN until hs__onednn_destroy. Thread: engine only. */
const char *hs__onednn_impl(struct hs__onednn *dnn, enum hs_type t);

#endif
