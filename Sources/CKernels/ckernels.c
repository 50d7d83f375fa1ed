#include "ckernels.h"
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

CLONES void ck_add_inplace(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
