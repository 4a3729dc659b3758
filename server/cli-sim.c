/* hetserve sim WHAT: the simulator reproductions, one per simulated hardware model. Add a row
 * to the table for another. */
#include <stdio.h>
#include <string.h>

#include "server/cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *what;
} sims[] = {
    {"chime", hs__cli_sim_chime, "CHIME's comparison of attention systems (simulated DIMM-PIM)"},
    {"vnpu", hs__cli_sim_vnpu, "vNPU's topology mapping on the simulated mesh NPU"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: hetserve sim WHAT [options]\n\nreproductions:\n");
    for (size_t i = 0; i < sizeof(sims) / sizeof(sims[0]); i++) {
        fprintf(f, "  %-8s %s\n", sims[i].name, sims[i].what);
    }
    fprintf(f, "\nRun 'hetserve sim WHAT --help' for its options.\n");
}

int hs__cli_sim(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(sims) / sizeof(sims[0]); i++) {
        if (!strcmp(argv[1], sims[i].name)) {
            return sims[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "hetserve sim: unknown reproduction '%s'; run 'hetserve sim --help'\n",
            argv[1]);
    return 2;
}
