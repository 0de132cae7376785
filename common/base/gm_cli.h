/*
 * gm_cli: what every gmorph subcommand shares: strict number parsing with
 * messages that name the option, the exit-code policy, and one entry point per
 * subcommand (each in its own gm_cmd_<name>.c, in the folder that owns its
 * domain; coordinator/gmorph.c dispatches to them).
 *
 * Exit codes: 0 success, 2 bad usage or bad input, 1 runtime failure.
 */
#ifndef GM_CLI_H
#define GM_CLI_H

#include <stdint.h>

#include "gm_error.h"

enum { GM_EXIT_OK = 0, GM_EXIT_FAIL = 1, GM_EXIT_USAGE = 2 };

/*
 * Each parser prints "gmorph <cmd>: <option> must be ..., got "<text>"" to
 * stderr and returns -1 on bad input, 0 on success.
 */
int gm_cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int gm_cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
/* 1 to cap positive integers separated by commas ("16,32,64"); w[n] = 0 after them. */
int gm_cli_int_list(const char *cmd, const char *opt, const char *s, int cap, int *w);

/* Prints "gmorph <cmd>: [what: ]<message>" and returns the exit code for err. */
int gm_cli_fail(const char *cmd, const char *what, const gm_error *err);
/* The exit code a status deserves: 2 for bad input, 1 for runtime failures. */
int gm_cli_exit_code(gm_status st);

/* Number of online CPU cores (at least 1). */
int gm_cli_cores(void);

/* Subcommands: argv[0] is the subcommand's name. Declared here, defined where they belong. */
int gm_cmd_data(int argc, char **argv);   /* datasets/gm_cmd_data.c */
int gm_cmd_zoo(int argc, char **argv);    /* datasets/gm_cmd_zoo.c */
int gm_cmd_train(int argc, char **argv);  /* worker/gm_cmd_train.c */
int gm_cmd_eval(int argc, char **argv);   /* worker/gm_cmd_eval.c */
int gm_cmd_import(int argc, char **argv); /* worker/gm_cmd_import.c */
int gm_cmd_export(int argc, char **argv); /* worker/gm_cmd_export.c */
int gm_cmd_report(int argc, char **argv); /* coordinator/gm_cmd_report.c */
int gm_cmd_runs(int argc, char **argv);   /* coordinator/gm_cmd_runs.c */

#endif
