/* Built into every Criterion test program (tests/meson.build's criterion_dep). Under valgrind
 * (HS_VALGRIND, set by the `valgrind` test setup) code runs 20 to 100 times slower, so each
 * test's own timeout (`.timeout = N`) is stretched by HS_VALGRIND_TIMEOUT_SCALE (default 100),
 * as meson stretches the programs' timeouts: a test still fails when it hangs, not when it is
 * merely instrumented. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdlib.h>

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    if (!getenv("HS_VALGRIND")) {
        return;
    }
    const char *s = getenv("HS_VALGRIND_TIMEOUT_SCALE");
    const double scale = s && atof(s) > 0 ? atof(s) : 100.0;
    FOREACH_SET(struct criterion_suite_set * suite, set->suites)
    {
        FOREACH_SET(struct criterion_test * t, suite->tests)
        {
            if (t->data->timeout > 0) {
                t->data->timeout *= scale;
            }
        }
    }
}
