#define _POSIX_C_SOURCE 200809L
#include "gm_tb.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "gm_tb_event.pb-c.h"

struct gm_tb {
    FILE *f;
    char path[1400];
};

uint32_t gm_tb_crc32c(const void *data, size_t n)
{
    /* Bitwise, reflected polynomial 0x82F63B78: a few hundred bytes per candidate need no table. */
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

uint32_t gm_tb_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

static void le64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

static void le32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
}

/* One record: length, its masked CRC, the packed event, its masked CRC; flushed. */
static gm_status write_event(gm_tb *w, const Gmorph__Tb__Event *ev, gm_error *err)
{
    const size_t n = gmorph__tb__event__get_packed_size(ev);
    unsigned char *buf = malloc(n + 16);
    if (!buf) return gm_error_set(err, GM_ENOMEM, "%s: out of memory for an event", w->path);
    le64(buf, (uint64_t)n);
    le32(buf + 8, gm_tb_mask(gm_tb_crc32c(buf, 8)));
    gmorph__tb__event__pack(ev, buf + 12);
    le32(buf + 12 + n, gm_tb_mask(gm_tb_crc32c(buf + 12, n)));
    const int ok = fwrite(buf, 1, n + 16, w->f) == n + 16 && fflush(w->f) == 0;
    free(buf);
    return ok ? GM_OK : gm_error_set(err, GM_EIO, "%s: writing failed: %s", w->path, strerror(errno));
}

gm_status gm_tb_open(gm_tb **out, const char *dir, gm_error *err)
{
    *out = NULL;
    gm_tb *w = calloc(1, sizeof *w);
    if (!w) return gm_error_set(err, GM_ENOMEM, "out of memory");
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    const double t = now_s();
    snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%lld.%s.%ld.gmorph", dir, (long long)t, host,
             (long)getpid());
    if (!(w->f = fopen(w->path, "wb"))) {
        gm_status st = gm_error_set(err, GM_EIO, "%s: cannot create: %s", w->path, strerror(errno));
        free(w);
        return st;
    }
    Gmorph__Tb__Event ev = GMORPH__TB__EVENT__INIT;
    ev.wall_time = t;
    ev.what_case = GMORPH__TB__EVENT__WHAT_FILE_VERSION;
    ev.file_version = (char *)"brain.Event:2";
    gm_status st = write_event(w, &ev, err);
    if (st != GM_OK) {
        gm_tb_close(w);
        return st;
    }
    *out = w;
    return GM_OK;
}

gm_status gm_tb_scalar(gm_tb *w, const char *tag, int64_t step, double wall_time, double value, gm_error *err)
{
    Gmorph__Tb__Summary__Value v = GMORPH__TB__SUMMARY__VALUE__INIT;
    v.tag = (char *)tag;
    v.value_case = GMORPH__TB__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
    v.simple_value = (float)value;
    Gmorph__Tb__Summary__Value *vs[1] = {&v};
    Gmorph__Tb__Summary sum = GMORPH__TB__SUMMARY__INIT;
    sum.n_value = 1;
    sum.value = vs;
    Gmorph__Tb__Event ev = GMORPH__TB__EVENT__INIT;
    ev.wall_time = wall_time > 0 ? wall_time : now_s();
    ev.step = step;
    ev.what_case = GMORPH__TB__EVENT__WHAT_SUMMARY;
    ev.summary = &sum;
    return write_event(w, &ev, err);
}

const char *gm_tb_path(const gm_tb *w)
{
    return w->path;
}

void gm_tb_close(gm_tb *w)
{
    if (!w) return;
    if (w->f) fclose(w->f);
    free(w);
}
