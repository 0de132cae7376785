#define _POSIX_C_SOURCE 200809L
#include "gm_device.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_group_mpi.h"
#include "gm_mpi.h"
#ifdef GMORPH_HAVE_CUDA_BACKEND
#include "gm_backend_cuda.h"
#include "gm_cuda.h"
#endif
#ifdef GMORPH_HAVE_NCCL
#include "gm_group_nccl.h"
#endif

gm_status gm_device_parse(const char *name, gm_device_kind *kind, int *tf32, gm_error *err)
{
    int t = 0;
    if (name && !strcmp(name, "cpu")) *kind = GM_DEVICE_CPU;
    else if (name && !strcmp(name, "cuda")) *kind = GM_DEVICE_CUDA;
    else if (name && !strcmp(name, "cuda-tf32")) *kind = GM_DEVICE_CUDA, t = 1;
    else
        return gm_error_set(err, GM_EINVAL, "unknown device \"%s\": expected cpu, cuda or cuda-tf32",
                            name ? name : "");
    if (tf32) *tf32 = t;
    return GM_OK;
}

const char *gm_device_name(gm_device_kind kind) { return kind == GM_DEVICE_CUDA ? "cuda" : "cpu"; }

/* A non-negative integer from the environment, or -1. */
static int env_index(const char *var)
{
    const char *s = getenv(var);
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return *end || errno || v < 0 || v > 1 << 20 ? -1 : (int)v;
}

int gm_device_local_rank(MPI_Comm comm)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"};
    int local = -1;
    for (size_t i = 0; local < 0 && i < sizeof vars / sizeof vars[0]; i++) local = env_index(vars[i]);
    /* Split even when a variable answered: every rank of comm must take part alike. A failing
     * MPI call only loses this answer: the variables, else 0, still pick a GPU. */
    if (comm != MPI_COMM_NULL && gm_mpi_world_rank() >= 0) {
        MPI_Comm node;
        if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
            int r = -1;
            if (MPI_Comm_rank(node, &r) != MPI_SUCCESS) r = -1;
            if (MPI_Comm_free(&node) != MPI_SUCCESS) r = -1;
            if (local < 0) local = r;
        }
    }
    return local < 0 ? 0 : local;
}

#ifdef GMORPH_HAVE_CUDA_BACKEND
static gm_status open_cuda(gm_backend **out, const gm_device_opts *o, char *desc, size_t desc_size, gm_error *err)
{
    gm_error why;
    gm_error_clear(&why);
    gm_cuda_info info;
    if (gm_cuda_probe(&info, &why) != GM_OK)
        return gm_error_set(err, GM_EINVAL, "device cuda: no usable GPU on this machine: %s", why.msg);
    int device = 0;
    gm_status st = gm_cuda_select_device(o->local_rank, &device, &why);
    if (st != GM_OK) return gm_error_set(err, st, "device cuda: %s", why.msg);
    st = gm_backend_cuda_create(out, &(gm_cuda_opts){.device = device, .tf32 = o->tf32}, &why);
    if (st != GM_OK) return gm_error_set(err, st, "device cuda (GPU %d): %s", device, why.msg);
    if (desc && desc_size) {
        char line[512];
        snprintf(desc, desc_size, "cuda GPU %d of %s%s", device, gm_cuda_info_format(&info, line, sizeof line),
                 o->tf32 ? ", TF32 allowed" : "");
    }
    return GM_OK;
}
#else
static gm_status open_cuda(gm_backend **out, const gm_device_opts *o, char *desc, size_t desc_size, gm_error *err)
{
    (void)out;
    (void)o;
    (void)desc;
    (void)desc_size;
    return gm_error_set(err, GM_EINVAL, "device cuda: this gmorph was built without the CUDA backend (configure "
                                        "with -DGMORPH_CUDA=ON where the CUDA toolkit is installed)");
}
#endif

gm_status gm_device_open(gm_backend **out, const gm_device_opts *o, char *desc, size_t desc_size, gm_error *err)
{
    *out = NULL;
    if (o->kind == GM_DEVICE_CUDA) return open_cuda(out, o, desc, desc_size, err);
    if (o->kind != GM_DEVICE_CPU) return gm_error_set(err, GM_EINVAL, "device: unknown kind %d", (int)o->kind);
    gm_status st = gm_backend_cpu_create(out, o->threads, err);
    if (st == GM_OK && desc && desc_size)
        snprintf(desc, desc_size, "cpu, %d thread%s, OpenBLAS kernels %s", o->threads, o->threads == 1 ? "" : "s",
                 gm_backend_cpu_blas_core());
    return st;
}

gm_status gm_device_open_named(gm_backend **out, const char *name, int threads, char *desc, size_t desc_size,
                               gm_error *err)
{
    *out = NULL;
    gm_device_opts o = {.threads = threads, .local_rank = gm_device_local_rank(MPI_COMM_NULL)};
    gm_status st = gm_device_parse(name, &o.kind, &o.tf32, err);
    return st == GM_OK ? gm_device_open(out, &o, desc, desc_size, err) : st;
}

/* ---- data-parallel groups ------------------------------------------------- */

struct gm_device_group {
    gm_group_mpi mpi;
    void *nccl; /* gm_group_nccl, when the group sums with NCCL */
    gm_ft_group group;
};

#ifdef GMORPH_HAVE_NCCL
static gm_status open_nccl(void **nccl, MPI_Comm comm, gm_backend *be, gm_error *err)
{
    gm_group_nccl *g = NULL;
    gm_status st = gm_group_nccl_create(&g, comm, be, err);
    *nccl = g;
    return st;
}

static gm_ft_group nccl_group(void *nccl) { return gm_group_nccl_group(nccl); }
static void free_nccl(void *nccl) { gm_group_nccl_free(nccl); }
#else
static gm_status open_nccl(void **nccl, MPI_Comm comm, gm_backend *be, gm_error *err)
{
    (void)be;
    *nccl = NULL;
    int size = 0;
    gm_status st = gm_mpi_check(MPI_Comm_size(comm, &size), "group: its size", err);
    if (st != GM_OK) return st;
    return gm_error_set(err, GM_EINVAL, "device cuda: a group of %d ranks sums gradients with NCCL, and this gmorph "
                                        "was built without NCCL: use groups of one rank (--group-size 1)", size);
}

static gm_ft_group nccl_group(void *nccl)
{
    (void)nccl;
    return (gm_ft_group){0};
}

static void free_nccl(void *nccl) { (void)nccl; }
#endif

gm_status gm_device_group_open(gm_device_group **out, MPI_Comm comm, gm_device_kind kind, gm_backend *be,
                               gm_error *err)
{
    *out = NULL;
    int size = 1;
    gm_status st = gm_mpi_check(MPI_Comm_size(comm, &size), "group: its size", err);
    if (st != GM_OK) return st;
    void *nccl = NULL;
    /* The collective set-up first: a rank that then fails to allocate fails alone, after it. */
    st = kind == GM_DEVICE_CUDA && size > 1 ? open_nccl(&nccl, comm, be, err) : GM_OK;
    if (st != GM_OK) return st;
    gm_device_group *g = calloc(1, sizeof *g);
    if (!g) {
        free_nccl(nccl);
        return gm_error_set(err, GM_ENOMEM, "group: out of memory");
    }
    g->nccl = nccl;
    if (nccl) g->group = nccl_group(nccl);
    else st = gm_group_mpi_make(&g->mpi, comm, &g->group, err);
    if (st != GM_OK) {
        gm_device_group_free(g);
        return st;
    }
    *out = g;
    return GM_OK;
}

const gm_ft_group *gm_device_group_get(const gm_device_group *g) { return &g->group; }

void gm_device_group_free(gm_device_group *g)
{
    if (!g) return;
    free_nccl(g->nccl);
    free(g);
}
