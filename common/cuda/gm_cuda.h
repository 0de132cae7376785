/*
 * gm_cuda: the CUDA side of gmorph, first piece: find a GPU, pick one per rank,
 * and prove that kernels and cuBLAS give the right answers on it.
 *
 * The library is built only when CMake found a CUDA toolkit (GMORPH_CUDA=AUTO
 * or ON); it links the CUDA runtime and cuBLAS (and NCCL when found, which
 * defines GMORPH_HAVE_NCCL), never the driver library, so it links and runs on
 * machines without a GPU. There every function here returns GM_EDEVICE with the
 * CUDA runtime's own explanation in err->msg ("no CUDA-capable device is
 * detected", "CUDA driver version is insufficient ..."): callers treat that as
 * "use the CPU backend" and may print the message; nothing here prints or exits.
 *
 * This header is plain C (no CUDA types); it may be included from C and from
 * .cu files. Nothing here keeps global state: the CUDA runtime's current device
 * (per host thread) is the only state these functions touch, and only
 * gm_cuda_select_device changes it.
 */
#ifndef GM_CUDA_H
#define GM_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "gm_error.h" /* a C header without its own extern "C" */

/* What gm_cuda_probe found. Versions use the libraries' own encodings. */
typedef struct {
    int device_count;     /* visible CUDA devices (after CUDA_VISIBLE_DEVICES) */
    /* device 0; zero/empty when there is no device */
    char name[256];       /* "NVIDIA H100 80GB HBM3" */
    int cc_major, cc_minor; /* compute capability, 9.0 for H100/H200 */
    size_t total_mem;     /* bytes of global memory */
    int multiprocessors;  /* streaming multiprocessors */
    /* versions; filled even when there is no device */
    int runtime_version;  /* CUDA runtime linked: 1000*major + 10*minor (13000) */
    int driver_version;   /* newest CUDA the driver supports, same encoding; 0: no driver */
    int nccl_version;     /* NCCL_VERSION_CODE form (22809 for 2.28.9); 0: built without NCCL */
} gm_cuda_info;

/*
 * Fills *info (which must not be NULL). Returns GM_OK when at least one device is
 * usable; GM_EDEVICE, with the CUDA error string and name in err, when there is
 * none or the runtime cannot talk to the driver. The version fields are filled
 * in either case. Creates no CUDA context, so every rank may call it cheaply
 * without allocating memory on device 0.
 */
gm_status gm_cuda_probe(gm_cuda_info *info, gm_error *err);

/*
 * Makes device (local_rank % device_count) current for the calling host thread
 * and stores its index in *device (which may be NULL). local_rank is the rank's
 * index among the ranks on its node (OMPI_COMM_WORLD_LOCAL_RANK,
 * SLURM_LOCALID); with more ranks than GPUs, ranks share GPUs round-robin.
 * GM_EINVAL for a negative local_rank, GM_EDEVICE when no device is usable.
 */
gm_status gm_cuda_select_device(int local_rank, int *device, gm_error *err);

/*
 * Runs a ReLU kernel over a buffer and a row-major cublasSgemm on the current
 * device with known inputs and compares both with a host computation. GM_OK when
 * they agree; GM_EDEVICE when a CUDA or cuBLAS call fails (the message names
 * the file, line, call and the library's error string) or a result differs (the
 * message names the element and both values). Frees everything it allocated on
 * every path.
 */
gm_status gm_cuda_selftest(gm_error *err);

/*
 * One line describing *info for logs: "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB,
 * 132 SMs), 1 device(s); CUDA runtime 13.0, driver 13.0; NCCL 2.28.9".
 * Truncates to size (including the terminating NUL) and returns buf.
 */
char *gm_cuda_info_format(const gm_cuda_info *info, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif
