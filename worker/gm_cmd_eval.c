#include <stdio.h>

#include "gm_cli.h"

int gm_cmd_eval(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "gmorph eval: not built yet\n");
    return GM_EXIT_FAIL;
}
