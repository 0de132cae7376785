/* gm_cuda_info_format: the log line for a gm_cuda_info; plain C, no CUDA calls. */
#include "gm_cuda.h"

#include <stdio.h>

char *gm_cuda_info_format(const gm_cuda_info *info, char *buf, size_t size)
{
    if (!buf || size == 0) return buf;
    if (!info) {
        snprintf(buf, size, "(no CUDA info)");
        return buf;
    }
    char nccl[32] = "no NCCL";
    if (info->nccl_version > 0) {
        /* since NCCL 2.9: 10000 * major + 100 * minor + patch */
        int v = info->nccl_version;
        snprintf(nccl, sizeof nccl, "NCCL %d.%d.%d", v / 10000, v / 100 % 100, v % 100);
    }
    char driver[32] = "no driver";
    if (info->driver_version > 0)
        snprintf(driver, sizeof driver, "driver %d.%d", info->driver_version / 1000,
                 info->driver_version % 1000 / 10);
    char versions[128];
    snprintf(versions, sizeof versions, "CUDA runtime %d.%d, %s; %s", info->runtime_version / 1000,
             info->runtime_version % 1000 / 10, driver, nccl);
    if (info->device_count <= 0) {
        snprintf(buf, size, "no CUDA device; %s", versions);
    } else {
        snprintf(buf, size, "%s (sm_%d%d, %.1f GiB, %d SMs), %d device(s); %s", info->name,
                 info->cc_major, info->cc_minor, (double)info->total_mem / (1024.0 * 1024.0 * 1024.0),
                 info->multiprocessors, info->device_count, versions);
    }
    return buf;
}
