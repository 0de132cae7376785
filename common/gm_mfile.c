#include "gm_mfile.h"
