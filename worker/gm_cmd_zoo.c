#include <stdio.h>

#include "gm_cli.h"

int gm_cmd_zoo(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "gmorph zoo: not built yet\n");
    return GM_EXIT_FAIL;
}
