#include "gm_version.h"

#include <cblas.h>
#include <mpi.h>

#ifndef GMORPH_VERSION
#define GMORPH_VERSION "unknown"
#endif
#ifndef GMORPH_BUILT_CUDA
#define GMORPH_BUILT_CUDA 0
#endif

void gm_version_print(FILE *f, const char *prog)
{
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int n = 0, major = 0, minor = 0;
    MPI_Get_library_version(mpi, &n); /* allowed before MPI_Init */
    MPI_Get_version(&major, &minor);
    for (char *p = mpi; *p; p++)
        if (*p == '\n' || *p == ',') {
            *p = '\0';
            break;
        }
    fprintf(f, "%s %s\n", prog, GMORPH_VERSION);
    fprintf(f, "  CUDA backend: %s\n", GMORPH_BUILT_CUDA ? "built (cuBLAS, cuDNN; NCCL for data-parallel groups)" : "not built");
    fprintf(f, "  MPI: %s (MPI %d.%d)\n", mpi, major, minor);
    fprintf(f, "  BLAS: %s; kernels for this CPU: %s\n", openblas_get_config(), openblas_get_corename());
}
