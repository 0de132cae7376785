#include "gm_train.h"

#include <math.h>
#include <stdlib.h>

#include "gm_clock.h"
#include "gm_optim.h"

static void shuffle(int *idx, int n, gm_rng *rng)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)gm_rng_below(rng, (uint32_t)(i + 1)), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

static int count_correct(const float *logits, const int32_t *labels, const int *idx, int n, int classes)
{
    int correct = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * classes;
        int best = 0;
        for (int k = 1; k < classes; k++) best = z[k] > z[best] ? k : best;
        correct += best == labels[idx ? idx[i] : i];
    }
    return correct;
}

static gm_status check_net(gm_net *net, const gm_imageset *set, gm_error *err)
{
    if (gm_net_noutputs(net) != 1)
        return gm_error_set(err, GM_EINVAL, "train: the net has %d outputs; a classifier has one", gm_net_noutputs(net));
    gm_shape out = gm_net_output_shape(net, 0);
    if ((int)gm_shape_numel(out) != set->classes)
        return gm_error_set(err, GM_ESHAPE, "train: the net has %zu logits but the data has %d classes",
                            gm_shape_numel(out), set->classes);
    return GM_OK;
}

gm_status gm_train_classifier(gm_net *net, const gm_imageset *set, const gm_train_opts *o, gm_error *err)
{
    gm_status s = check_net(net, set, err);
    if (s != GM_OK) return s;
    if (o->epochs < 1 || o->batch < 1)
        return gm_error_set(err, GM_EINVAL, "train: %d epochs of batch %d", o->epochs, o->batch);
    if (set->n < o->batch)
        return gm_error_set(err, GM_EINVAL, "train: %d training images are fewer than one batch of %d",
                            set->n, o->batch);
    gm_backend *be = gm_net_backend(net);
    gm_optim *opt;
    s = gm_optim_create(&opt, be, o->optimizer, gm_net_nparams(net), err);
    if (s != GM_OK) return s;
    const int classes = set->classes, B = o->batch;
    int *idx = malloc(sizeof(int) * (size_t)set->n);
    float *x = malloc(sizeof(float) * (size_t)B * gm_shape_numel(set->shape));
    float *logits = malloc(sizeof(float) * (size_t)B * classes);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)B);
    if (!idx || !x || !logits || !y) s = gm_error_set(err, GM_ENOMEM, "train: out of memory");
    for (int i = 0; s == GM_OK && i < set->n; i++) idx[i] = i;
    gm_rng rng;
    gm_rng_seed(&rng, o->seed);
    const long per_epoch = set->n / B, steps = per_epoch * o->epochs;
    const double t0 = gm_now_s();
    double last_report = t0;
    for (int e = 0; s == GM_OK && e < o->epochs; e++) {
        shuffle(idx, set->n, &rng);
        double loss_sum = 0.0;
        long seen = 0, correct = 0;
        for (long b = 0; s == GM_OK && b < per_epoch; b++) {
            const long step = e * per_epoch + b;
            gm_optim_set_lr(opt, 0.5f * o->optimizer.lr * (1.0f + cosf(3.14159265f * (float)step / (float)steps)));
            const int *bi = idx + b * B;
            gm_imageset_to_float(set, bi, B, o->mean, o->std, x);
            for (int i = 0; i < B; i++) y[i] = set->y[bi[i]];
            float loss;
            s = gm_net_forward(net, x, B, 1, err);
            if (s == GM_OK) s = gm_net_loss(net, 0, GM_LOSS_CROSS_ENTROPY, NULL, y, 1.0f, &loss, err);
            if (s != GM_OK) break;
            be->to_host(be, logits, gm_net_output(net, 0), sizeof(float) * (size_t)B * classes);
            correct += count_correct(logits, y, NULL, B, classes);
            gm_net_zero_grad(net);
            s = gm_net_backward(net, err);
            if (s != GM_OK) break;
            gm_optim_step(opt, gm_net_params(net), gm_net_grads(net));
            loss_sum += loss * B;
            seen += B;
            double now = gm_now_s();
            int done = b == per_epoch - 1;
            if (o->progress && (done || now - last_report >= o->report_every_s)) {
                double rate = (double)(step + 1) * B / (now - t0);
                gm_train_progress p = {e + 1, o->epochs, step + 1, steps, (float)(loss_sum / seen),
                                       (float)correct / (float)seen, rate, now - t0,
                                       (double)(steps - step - 1) * B / rate, done};
                o->progress(o->ctx, &p);
                last_report = now;
            }
        }
    }
    free(idx);
    free(x);
    free(logits);
    free(y);
    gm_optim_free(opt);
    return s;
}

gm_status gm_eval_accuracy(gm_net *net, const gm_imageset *set, int batch, float mean, float std,
                           double *acc, gm_error *err)
{
    gm_status s = check_net(net, set, err);
    if (s != GM_OK) return s;
    gm_backend *be = gm_net_backend(net);
    float *x = malloc(sizeof(float) * (size_t)batch * gm_shape_numel(set->shape));
    float *logits = malloc(sizeof(float) * (size_t)batch * set->classes);
    int *idx = malloc(sizeof(int) * (size_t)batch);
    if (!x || !logits || !idx) s = gm_error_set(err, GM_ENOMEM, "eval: out of memory");
    long correct = 0;
    for (int first = 0; s == GM_OK && first < set->n; first += batch) {
        int n = set->n - first < batch ? set->n - first : batch;
        for (int i = 0; i < n; i++) idx[i] = first + i;
        gm_imageset_to_float(set, idx, n, mean, std, x);
        s = gm_net_forward(net, x, n, 0, err);
        if (s != GM_OK) break;
        be->to_host(be, logits, gm_net_output(net, 0), sizeof(float) * (size_t)n * set->classes);
        correct += count_correct(logits, set->y, idx, n, set->classes);
    }
    *acc = set->n ? (double)correct / set->n : 0.0;
    free(x);
    free(logits);
    free(idx);
    return s;
}

gm_status gm_measure_latency(gm_net *net, int warmup, int runs, double *median_ms, gm_error *err)
{
    if (runs < 1) return gm_error_set(err, GM_EINVAL, "latency: %d runs", runs);
    gm_backend *be = gm_net_backend(net);
    gm_shape in = gm_net_block_input_shape(net, 0);
    float *x = calloc(gm_shape_numel(in), sizeof(float));
    double *t = malloc(sizeof(double) * (size_t)runs);
    gm_status s = x && t ? GM_OK : gm_error_set(err, GM_ENOMEM, "latency: out of memory");
    for (int i = 0; s == GM_OK && i < warmup + runs; i++) {
        double t0 = gm_now_s();
        s = gm_net_forward(net, x, 1, 0, err);
        be->sync(be);
        if (i >= warmup) t[i - warmup] = (gm_now_s() - t0) * 1e3;
    }
    if (s == GM_OK) *median_ms = gm_median(t, runs);
    free(x);
    free(t);
    return s;
}
