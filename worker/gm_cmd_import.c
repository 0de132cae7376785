/* gmorph import: placeholder until the ONNX import command lands (see gm_onnx.h). */
#include <stdio.h>

#include "gm_cli.h"

int gm_cmd_import(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "gmorph %s: not built yet\n", argv[0]);
    return GM_EXIT_FAIL;
}
