/*
 * gm_version: what `gmorph --version` and `gmorph-search --version` print: the
 * release, and the build's options and libraries (CUDA backend, NCCL, MPI, the
 * BLAS and the kernels it picked on this CPU), for bug reports and for knowing
 * which install a cluster module loaded.
 */
#ifndef GM_VERSION_H
#define GM_VERSION_H

#include <stdio.h>

/* Writes "PROG VERSION" and one line per build option to f. Needs no MPI_Init. */
void gm_version_print(FILE *f, const char *prog);

#endif
