/* CPU backend internals shared with tests. Users create it through hs_backend_create("cpu"). */
#ifndef HS_BACKENDS_CPU_CPU_H
#define HS_BACKENDS_CPU_CPU_H

#include <stdbool.h>

#include "backends/backend-impl.h"

/* Enables or disables the backend's own SIMD paths (the fused f16 attention accumulation), so
 * tests can check the portable path on any machine. Enabling is a no-op where the CPU lacks
 * AVX2/FMA/F16C. be must be a CPU backend. Thread: engine only. */
void hs__cpu_set_simd(struct hs_backend *be, bool on);

/* Routes the prompt-sized F32/F16/BF16 products through oneDNN (on) or the backend's own kernels
 * (off), whatever HS_ONEDNN says; for tests and benchmarks. HS_E_NOTSUP when on is asked of a
 * build without oneDNN or a machine without libdnnl (the backend stays off), HS_E_NOMEM,
 * HS_E_DEVICE. be must be a CPU backend. Thread: engine only. */
hs_status hs__cpu_set_onednn(struct hs_backend *be, bool on);

#endif
