/*
 * gm_optim: SGD with momentum, Adam and AdamW over one flat parameter array.
 *
 * PyTorch's update rules exactly (torch.optim.SGD / Adam / AdamW), so a step
 * here and a step there agree to float rounding. The optimiser owns its state
 * (momentum, first and second moments), allocated once on the backend.
 */
#ifndef GM_OPTIM_H
#define GM_OPTIM_H

#include <stddef.h>

#include "gm_backend.h"

typedef struct gm_optim gm_optim;

gm_update gm_update_sgd(float lr, float momentum, float weight_decay, int nesterov);
gm_update gm_update_adam(float lr, float beta1, float beta2, float eps, float weight_decay);
gm_update gm_update_adamw(float lr, float beta1, float beta2, float eps, float weight_decay);

/* State for n parameters; hyper.step is ignored (the optimiser counts). */
gm_status gm_optim_create(gm_optim **out, gm_backend *be, gm_update hyper, size_t n, gm_error *err);
void gm_optim_free(gm_optim *opt);

/* One update of params (n floats, backend memory) from grads. */
void gm_optim_step(gm_optim *opt, float *params, const float *grads);
void gm_optim_set_lr(gm_optim *opt, float lr);
long gm_optim_steps(const gm_optim *opt);

/*
 * The state a resumed training must restore: the update rule, the step count and
 * the moment arrays (backend memory, n floats each; v is NULL for SGD).
 */
gm_update gm_optim_hyper(const gm_optim *opt);
void gm_optim_state(gm_optim *opt, float **m, float **v, size_t *n);
void gm_optim_set_steps(gm_optim *opt, long steps);

#endif
