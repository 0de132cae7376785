#include "gm_mutate.h"
