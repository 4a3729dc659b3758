/* hetserve serve: the HTTP server subcommand (exit codes as server/cli.h). Thread: main. */
#ifndef HS_API_CLI_SERVE_H
#define HS_API_CLI_SERVE_H

int hs__cli_serve(int argc, char **argv);

#endif
