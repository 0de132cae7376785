/*
 * gmorph: the command-line entry point for data, training, evaluation, the
 * task zoo, ONNX import and export, and reports. Each subcommand lives in
 * gm_cmd_<name>.c in the folder that owns its domain (gm_cli.h says where);
 * this table links them all, so it sits in coordinator/, the top folder.
 */
#include <stdio.h>
#include <string.h>

#include "gm_cli.h"
#include "gm_version.h"

typedef struct {
    const char *name, *summary;
    int (*run)(int argc, char **argv);
} command;

static const command commands[] = {
    {"data", "make or convert datasets into gmorph's HDF5 format", gm_cmd_data},
    {"train", "train a single-task model on a dataset task", gm_cmd_train},
    {"eval", "accuracy and batch-1 latency of a model file", gm_cmd_eval},
    {"zoo", "build a benchmark's datasets and models from its config", gm_cmd_zoo},
    {"report", "an HTML and Markdown report of a search's run folder", gm_cmd_report},
    {"runs", "list gmorph-search run folders: state, candidates, best speed-up", gm_cmd_runs},
    {"import", "read an ONNX model (from PyTorch) into a gmorph model file", gm_cmd_import},
    {"export", "write a model file, fused ones included, as an ONNX model", gm_cmd_export},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: gmorph <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-7s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'gmorph <command> --help' describes each. The fusion search is gmorph-search.\n"
               "'gmorph --version' names the build's options. Exit codes: 0 success, 2 bad usage or bad input,\n"
               "1 runtime failure.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return GM_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--version")) {
        gm_version_print(stdout, "gmorph");
        return GM_EXIT_OK;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return GM_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "gmorph: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return GM_EXIT_USAGE;
}
