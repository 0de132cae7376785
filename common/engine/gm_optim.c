#include "gm_optim.h"

#include <stdlib.h>

struct gm_optim {
    gm_backend *be;
    gm_update u;
    float *m, *v;
    size_t n;
};

gm_update gm_update_sgd(float lr, float momentum, float weight_decay, int nesterov)
{
    return (gm_update){.kind = GM_UPDATE_SGD, .lr = lr, .momentum = momentum,
                       .weight_decay = weight_decay, .nesterov = nesterov};
}

gm_update gm_update_adam(float lr, float beta1, float beta2, float eps, float weight_decay)
{
    return (gm_update){.kind = GM_UPDATE_ADAM, .lr = lr, .beta1 = beta1, .beta2 = beta2,
                       .eps = eps, .weight_decay = weight_decay};
}

gm_update gm_update_adamw(float lr, float beta1, float beta2, float eps, float weight_decay)
{
    gm_update u = gm_update_adam(lr, beta1, beta2, eps, weight_decay);
    u.kind = GM_UPDATE_ADAMW;
    return u;
}

gm_status gm_optim_create(gm_optim **out, gm_backend *be, gm_update hyper, size_t n, gm_error *err)
{
    *out = NULL;
    if (!(hyper.lr > 0.0f))
        return gm_error_set(err, GM_EINVAL, "optimiser: learning rate %g must be positive", (double)hyper.lr);
    if (hyper.kind != GM_UPDATE_SGD && !(hyper.beta1 >= 0.0f && hyper.beta1 < 1.0f && hyper.beta2 >= 0.0f &&
                                         hyper.beta2 < 1.0f))
        return gm_error_set(err, GM_EINVAL, "optimiser: betas (%g, %g) must be in [0, 1)",
                            (double)hyper.beta1, (double)hyper.beta2);
    gm_optim *o = calloc(1, sizeof *o);
    if (!o) return gm_error_set(err, GM_ENOMEM, "optimiser: out of memory");
    o->be = be;
    o->u = hyper;
    o->u.step = 0;
    o->n = n;
    o->m = be->alloc(be, sizeof(float) * (n ? n : 1));
    if (hyper.kind != GM_UPDATE_SGD) o->v = be->alloc(be, sizeof(float) * (n ? n : 1));
    if (!o->m || (hyper.kind != GM_UPDATE_SGD && !o->v)) {
        gm_optim_free(o);
        return gm_error_set(err, GM_ENOMEM, "optimiser: cannot allocate state for %zu parameters", n);
    }
    *out = o;
    return GM_OK;
}

void gm_optim_free(gm_optim *o)
{
    if (!o) return;
    if (o->m) o->be->free(o->be, o->m);
    if (o->v) o->be->free(o->be, o->v);
    free(o);
}

void gm_optim_step(gm_optim *o, float *params, const float *grads)
{
    o->u.step++;
    o->be->update(o->be, &o->u, params, grads, o->m, o->v, o->n);
}

void gm_optim_set_lr(gm_optim *o, float lr) { o->u.lr = lr; }
long gm_optim_steps(const gm_optim *o) { return o->u.step; }

gm_update gm_optim_hyper(const gm_optim *o) { return o->u; }

void gm_optim_state(gm_optim *o, float **m, float **v, size_t *n)
{
    *m = o->m;
    *v = o->v;
    *n = o->n;
}

void gm_optim_set_steps(gm_optim *o, long steps) { o->u.step = steps; }
