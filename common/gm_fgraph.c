#include "gm_fgraph.h"
