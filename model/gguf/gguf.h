/* GGUF files: reading (v2 and v3, mmap'd) and writing (v3).
 *
 * The reader validates the whole header up front: every count, length and offset is checked
 * against the file size before use, so a truncated, corrupted or hostile file gets an error
 * naming the problem and its byte offset, never an out-of-bounds read. Thread: a reader is
 * immutable after open and may be shared; a writer belongs to one thread. */
#ifndef HS_MODEL_GGUF_H
#define HS_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

enum hs_gguf_type {
    HS_GGUF_TYPE_UINT8 = 0,
    HS_GGUF_TYPE_INT8 = 1,
    HS_GGUF_TYPE_UINT16 = 2,
    HS_GGUF_TYPE_INT16 = 3,
    HS_GGUF_TYPE_UINT32 = 4,
    HS_GGUF_TYPE_INT32 = 5,
    HS_GGUF_TYPE_FLOAT32 = 6,
    HS_GGUF_TYPE_BOOL = 7,
    HS_GGUF_TYPE_STRING = 8,
    HS_GGUF_TYPE_ARRAY = 9,
    HS_GGUF_TYPE_UINT64 = 10,
    HS_GGUF_TYPE_INT64 = 11,
    HS_GGUF_TYPE_FLOAT64 = 12,
    HS_GGUF_TYPE_COUNT,
};
const char *hs_gguf_type_str(enum hs_gguf_type t);

/* Bytes of one element of a scalar metadata type (UINT8 .. FLOAT64, BOOL); 0 for STRING, ARRAY
 * and unknown ids. Thread: any. */
size_t hs_gguf_type_size(uint32_t t);

#define HS_GGUF_DEFAULT_ALIGNMENT 32

/* A string in the file: NOT NUL-terminated; borrows the reader's memory. Valid UTF-8 is checked
 * for keys and tensor names only. */
struct hs_gguf_str {
    const char *data;
    uint64_t len;
};

/* A metadata value. Borrows the reader (valid until hs_gguf_close). */
struct hs_gguf_value {
    enum hs_gguf_type type;
    union {
        uint64_t u64; /* UINT8..UINT64 */
        int64_t i64;  /* INT8..INT64 */
        double f64;   /* FLOAT32, FLOAT64 */
        bool b;
        struct hs_gguf_str str;
        struct {
            enum hs_gguf_type type; /* element type */
            uint64_t n;
            /* numeric or bool: n packed little-endian elements, possibly unaligned (read with
             * hs_gguf_arr_get_*); STRING: n struct hs_gguf_str; ARRAY: n struct hs_gguf_value */
            const void *data;
        } arr;
    };
};

struct hs_gguf_tensor {
    const char *name; /* NUL-terminated copy, owned by the reader */
    enum hs_type type;
    uint32_t n_dims;
    int64_t ne[4];   /* ne[0] innermost; unused dims are 1 */
    uint64_t offset; /* from the start of the data section */
    size_t size_bytes;
    const void *data; /* into the mapping */
};

struct hs_gguf;

/* Where a reader's bytes live (hs_gguf_backing). */
enum hs_gguf_backing {
    HS_GGUF_MEMORY,     /* the caller's memory (hs_gguf_open_memory) */
    HS_GGUF_FILE_MAP,   /* the file mmap'd (4 KiB pages of the page cache) */
    HS_GGUF_HUGE_PAGES, /* the file read into anonymous, read-only 2 MiB transparent huge pages */
};

/* Opens path, parsing and validating the header. A file of 8 MiB or more is read into 2 MiB
 * transparent huge pages (made read-only): decode streams every weight once per token, and on
 * the 4 KiB pages of a file mapping the TLB misses and the hardware prefetchers stop every 4 KiB
 * (SmolLM-135M Q8_0 decode ~10% faster, see README "Benchmarks"). Smaller files, files over half
 * the machine's memory, a kernel with THP "never", or HS_MMAP=1 in the environment keep the
 * mmap'd file (shared page cache, pages read on first touch), as does a file whose copy cannot
 * be made (no memory, a read error). Errors: HS_E_IO (cannot open or map: err says why),
 * HS_E_FORMAT (damaged or not GGUF: err names the problem and byte offset),
 * HS_E_NOTSUP (version or tensor type we do not read), HS_E_NOMEM. *out stays NULL on error.
 * Returns new (free with hs_gguf_close). */
hs_status hs_gguf_open(const char *path, struct hs_gguf **out, struct hs_error *err);

/* Same over memory the caller keeps valid until hs_gguf_close (borrowed; used by fuzzers and
 * tests). */
hs_status hs_gguf_open_memory(const void *data, size_t size, struct hs_gguf **out,
                              struct hs_error *err);

void hs_gguf_close(struct hs_gguf *g);

uint32_t hs_gguf_version(const struct hs_gguf *g);
uint32_t hs_gguf_alignment(const struct hs_gguf *g);
size_t hs_gguf_data_offset(const struct hs_gguf *g); /* byte offset of the data section */
size_t hs_gguf_file_size(const struct hs_gguf *g);
enum hs_gguf_backing hs_gguf_backing(const struct hs_gguf *g);

/* Metadata, in file order. Keys are NUL-terminated copies owned by the reader. */
int64_t hs_gguf_n_kv(const struct hs_gguf *g);
const char *hs_gguf_kv_key(const struct hs_gguf *g, int64_t i);
const struct hs_gguf_value *hs_gguf_kv_value(const struct hs_gguf *g, int64_t i);
/* Value of key, or NULL when absent. */
const struct hs_gguf_value *hs_gguf_get(const struct hs_gguf *g, const char *key);

/* Typed lookups. HS_E_NOENT when absent (out untouched, so preset a default), HS_E_FORMAT when
 * the stored type does not convert (any integer type converts to an integer that can hold it;
 * FLOAT32/FLOAT64 to float), HS_E_RANGE for a UINT64 above INT64_MAX. */
hs_status hs_gguf_get_int(const struct hs_gguf *g, const char *key, int64_t *out);
hs_status hs_gguf_get_float(const struct hs_gguf *g, const char *key, double *out);
hs_status hs_gguf_get_bool(const struct hs_gguf *g, const char *key, bool *out);
hs_status hs_gguf_get_str(const struct hs_gguf *g, const char *key, struct hs_gguf_str *out);
/* Array of element type elem (HS_GGUF_TYPE_COUNT: any); HS_E_FORMAT when not such an array. */
hs_status hs_gguf_get_arr(const struct hs_gguf *g, const char *key, enum hs_gguf_type elem,
                          const struct hs_gguf_value **out);

/* Elements of numeric arrays (i < n; caller checks). The integer getter converts any integer or
 * bool element (a UINT64 above INT64_MAX comes back as its two's complement) and truncates
 * float elements, saturating (NaN gives 0); the float getter converts any numeric element.
 * STRING and ARRAY elements give 0. */
int64_t hs_gguf_arr_get_int(const struct hs_gguf_value *arr, uint64_t i);
double hs_gguf_arr_get_float(const struct hs_gguf_value *arr, uint64_t i);

/* Tensors, in file order. */
int64_t hs_gguf_n_tensors(const struct hs_gguf *g);
const struct hs_gguf_tensor *hs_gguf_tensor(const struct hs_gguf *g, int64_t i);
const struct hs_gguf_tensor *hs_gguf_find_tensor(const struct hs_gguf *g, const char *name);

/* True when s equals the NUL-terminated c. */
bool hs_gguf_str_eq(struct hs_gguf_str s, const char *c);

/* True when s[0..len) is valid UTF-8 (shortest forms, no surrogates, at most U+10FFFF) without
 * NUL bytes: the rule for keys and tensor names. Thread: any. */
bool hs_gguf_utf8_valid(const char *s, size_t len);

/* ---- writer (v3) ---- */

struct hs_gguf_writer;

/* Returns new (free with hs_gguf_writer_destroy); HS_E_NOMEM. */
hs_status hs_gguf_writer_create(struct hs_gguf_writer **out);
void hs_gguf_writer_destroy(struct hs_gguf_writer *w);

/* Setters copy key and value; setting a key twice replaces it. HS_E_INVAL for bad UTF-8 keys. */
hs_status hs_gguf_writer_set_u32(struct hs_gguf_writer *w, const char *key, uint32_t v);
hs_status hs_gguf_writer_set_i32(struct hs_gguf_writer *w, const char *key, int32_t v);
hs_status hs_gguf_writer_set_u64(struct hs_gguf_writer *w, const char *key, uint64_t v);
hs_status hs_gguf_writer_set_f32(struct hs_gguf_writer *w, const char *key, float v);
hs_status hs_gguf_writer_set_bool(struct hs_gguf_writer *w, const char *key, bool v);
hs_status hs_gguf_writer_set_str(struct hs_gguf_writer *w, const char *key, const char *v);
/* Numeric/bool array of elem type (packed little-endian elements, copied). */
hs_status hs_gguf_writer_set_arr(struct hs_gguf_writer *w, const char *key, enum hs_gguf_type elem,
                                 const void *data, uint64_t n);
hs_status hs_gguf_writer_set_arr_str(struct hs_gguf_writer *w, const char *key,
                                     const char *const *strs, uint64_t n);
/* Any value, arrays of arrays included (as a reader returns it, so a reader's metadata can be
 * copied); deep-copied. HS_E_INVAL for unknown types or arrays nested deeper than 8. */
hs_status hs_gguf_writer_set_value(struct hs_gguf_writer *w, const char *key,
                                   const struct hs_gguf_value *v);

/* Adds a tensor; data (size = hs_type_row_size(type, ne[0]) * rows) is copied. HS_E_INVAL for
 * duplicate names or shapes the type cannot hold. */
hs_status hs_gguf_writer_add_tensor(struct hs_gguf_writer *w, const char *name, enum hs_type type,
                                    uint32_t n_dims, const int64_t *ne, const void *data);

/* Writes the file (alignment from general.alignment if set, else 32) to a temporary file beside
 * path, then renames it over path. HS_E_IO with errno's message in err (no temporary is left);
 * HS_E_INVAL when general.alignment is not an unsigned power of two up to 2^30. */
hs_status hs_gguf_writer_write_file(const struct hs_gguf_writer *w, const char *path,
                                    struct hs_error *err);
/* Serialises into a new malloc'd buffer (free with free()); HS_E_NOMEM, HS_E_INVAL as above. */
hs_status hs_gguf_writer_write_memory(const struct hs_gguf_writer *w, void **out_data,
                                      size_t *out_size);

#endif
