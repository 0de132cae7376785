#include "gm_dataset.h"
