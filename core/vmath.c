#include "core/vmath.h"
#include <math.h>

float hy_softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
