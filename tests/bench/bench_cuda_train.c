/*
 * bench_cuda_train: training throughput of the CUDA backend (a measurement for
 * results/, not a test; it needs a GPU).
 *
 *   bench_cuda_train [--arch vgg13] [--widths 16,32,64,64] [--input 1,36,36]
 *                    [--classes 10] [--batch 256] [--tf32 0|1] [--warmup 10]
 *                    [--steps 50] [--device 0] [--torch IMAGES_PER_S]
 *
 * The defaults are benchmark B1's model (datasets/zoo/b1.json: VGG-13, widths
 * 16,32,64,64, a 1x36x36 canvas, 10 classes); B2's ResNet-18 is --arch resnet18
 * --input 3,32,32. The net comes from gm_models, as the zoo builds it. Random
 * inputs (kept on the GPU) and labels; each step is forward, cross-entropy loss,
 * zero_grad, backward and an Adam update (lr 1e-3), timed between CUDA events on
 * the backend's stream; the loss returns to the host every step, as training
 * does. Prints one JSON line with the median images/s after the warm-up steps,
 * and the ratio to PyTorch's images/s when --torch gives it (see
 * torch_train_step.py and gpu_vs_torch.sh beside this file).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_backend_cuda.h"
#include "gm_clock.h"
#include "gm_cuda.h"
#include "gm_models.h"
#include "gm_optim.h"
#include "gm_tensor.h"

enum { MAX_STEPS = 10000 };

typedef struct {
    const char *arch;
    int widths[5], input[3], classes, batch, tf32, warmup, steps, device;
    double torch_ips; /* 0: not given */
} bench_opts;

static int parse_list(const char *s, int *v, int max)
{
    int n = 0;
    while (n < max && *s) {
        char *end;
        v[n++] = (int)strtol(s, &end, 10);
        if (end == s) return -1;
        s = end;
        if (*s == ',') s++;
    }
    return *s ? -1 : n;
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.arch = "vgg13", .widths = {16, 32, 64, 64, 0}, .input = {1, 36, 36}, .classes = 10,
                      .batch = 256, .warmup = 10, .steps = 50};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return -1;
        i++;
        if (!strcmp(k, "--arch")) o->arch = v;
        else if (!strcmp(k, "--widths")) {
            memset(o->widths, 0, sizeof o->widths);
            if (parse_list(v, o->widths, 4) < 1) return -1;
        } else if (!strcmp(k, "--input")) {
            if (parse_list(v, o->input, 3) != 3) return -1;
        } else if (!strcmp(k, "--classes")) o->classes = atoi(v);
        else if (!strcmp(k, "--batch")) o->batch = atoi(v);
        else if (!strcmp(k, "--tf32")) o->tf32 = atoi(v);
        else if (!strcmp(k, "--warmup")) o->warmup = atoi(v);
        else if (!strcmp(k, "--steps")) o->steps = atoi(v);
        else if (!strcmp(k, "--device")) o->device = atoi(v);
        else if (!strcmp(k, "--torch")) o->torch_ips = atof(v);
        else return -1;
    }
    return o->batch >= 1 && o->steps >= 1 && o->steps <= MAX_STEPS && o->warmup >= 0 ? 0 : -1;
}

/* One training step; the loss comes back to the host. */
static gm_status step(gm_net *net, gm_optim *opt, const gm_tensor *x, const int32_t *y, float *loss, gm_error *err)
{
    gm_status s = gm_net_forward_tensor(net, x, 1, err);
    if (s == GM_OK) s = gm_net_loss(net, 0, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, loss, err);
    if (s != GM_OK) return s;
    gm_net_zero_grad(net);
    s = gm_net_backward(net, err);
    if (s == GM_OK) gm_optim_step(opt, gm_net_params(net), gm_net_grads(net));
    return s;
}

static int run(const bench_opts *o, const gm_model *m)
{
    gm_error err;
    gm_backend *be = NULL;
    gm_net *net = NULL;
    gm_optim *opt = NULL;
    gm_tensor x = {0};
    gm_cuda_opts copts = {o->device, o->tf32};
    gm_net_desc d = gm_model_desc(m);
    gm_status s = gm_backend_cuda_create(&be, &copts, &err);
    if (s == GM_OK) s = gm_net_create(&net, be, &d, o->batch, 1, &err);
    if (s == GM_OK)
        s = gm_optim_create(&opt, be, gm_update_adam(1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f), gm_net_nparams(net), &err);
    if (s == GM_OK) s = gm_tensor_create(&x, be, o->batch, m->input, &err);
    size_t nx = (size_t)o->batch * gm_shape_numel(m->input);
    float *hx = malloc(sizeof(float) * nx);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)o->batch);
    static double ms[MAX_STEPS];
    float loss = 0.0f;
    if (s == GM_OK && (!hx || !y)) s = gm_error_set(&err, GM_ENOMEM, "out of host memory");
    if (s == GM_OK) {
        gm_rng rng;
        gm_rng_seed(&rng, 1);
        for (size_t i = 0; i < nx; i++) hx[i] = gm_rng_normal(&rng);
        for (int i = 0; i < o->batch; i++) y[i] = (int32_t)gm_rng_below(&rng, (uint32_t)m->classes);
        s = gm_tensor_from_host(&x, 0, hx, nx, &err);
    }
    for (int i = 0; s == GM_OK && i < o->warmup + o->steps; i++) {
        be->mark(be, 0);
        s = step(net, opt, &x, y, &loss, &err);
        be->mark(be, 1);
        double t = be->elapsed_ms(be, 0, 1);
        if (i >= o->warmup) ms[i - o->warmup] = t;
    }
    if (s == GM_OK) s = gm_backend_cuda_status(be, &err);
    if (s == GM_OK) {
        gm_cuda_info info;
        gm_error ignored;
        if (gm_cuda_probe(&info, &ignored) != GM_OK) snprintf(info.name, sizeof info.name, "?");
        double med = gm_median(ms, o->steps), ips = o->batch / (med * 1e-3);
        printf("{\"impl\":\"gmorph-cuda\",\"device\":\"%s\",\"arch\":\"%s\",\"input\":[%d,%d,%d],\"classes\":%d,"
               "\"batch\":%d,\"tf32\":%d,\"params\":%zu,\"mflop\":%.2f,\"steps\":%d,\"step_ms\":%.3f,"
               "\"images_per_s\":%.1f,\"last_loss\":%.4f",
               info.name, o->arch, m->input.c, m->input.h, m->input.w, m->classes, o->batch, o->tf32 != 0,
               gm_net_nparams(net), (double)gm_net_flops(net) / 1e6, o->steps, med, ips, (double)loss);
        if (o->torch_ips > 0.0)
            printf(",\"torch_images_per_s\":%.1f,\"ratio_vs_torch\":%.3f", o->torch_ips, ips / o->torch_ips);
        printf("}\n");
    } else {
        fprintf(stderr, "bench_cuda_train: %s\n", err.msg);
    }
    free(hx);
    free(y);
    gm_tensor_free(&x);
    gm_optim_free(opt);
    gm_net_free(net);
    gm_backend_free(be);
    return s == GM_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    bench_opts o;
    if (parse_args(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: bench_cuda_train [--arch vgg13] [--widths 16,32,64,64] [--input 1,36,36] "
                        "[--classes 10] [--batch 256] [--tf32 0|1] [--warmup 10] [--steps 1..%d] [--device 0] "
                        "[--torch IMAGES_PER_S]\n", MAX_STEPS);
        return 2;
    }
    static gm_model m;
    gm_error err;
    gm_shape in = {o.input[0], o.input[1], o.input[2]};
    if (gm_model_from_name(&m, o.arch, o.widths, in, o.classes, &err) != GM_OK) {
        fprintf(stderr, "bench_cuda_train: %s\n", err.msg);
        return 2;
    }
    return run(&o, &m);
}
