#ifndef CKERNELS_H
#define CKERNELS_H
#include <stddef.h>
// Element-wise kernels for hot loops. Compiled with target_clones so a baseline x86-64 build still
// runs AVX2/AVX-512 code where the CPU has it.

/// y[i] += x[i]
void ck_add_inplace(float *y, const float *x, size_t n);

#include "ck_losses.h"
#endif
