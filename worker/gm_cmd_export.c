/* gmorph export: placeholder until the ONNX export command lands (see gm_onnx.h). */
#include <stdio.h>

#include "gm_cli.h"

int gm_cmd_export(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "gmorph %s: not built yet\n", argv[0]);
    return GM_EXIT_FAIL;
}
