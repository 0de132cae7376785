#include "gm_json.h"
