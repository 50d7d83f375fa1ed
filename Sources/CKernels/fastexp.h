#ifndef CK_FASTEXP_H
#define CK_FASTEXP_H
#include <stdint.h>
#include <string.h>

// exp via 2^n * p(r): n = round(x / ln2), r = x - n ln2 (split in two parts for accuracy), p a degree-6
// Taylor/minimax polynomial on [-ln2/2, ln2/2]. Branch-free, so loops calling it vectorise.
static inline float fast_expf(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    const float shifter = 12582912.0f; // 1.5 * 2^23: adding it rounds to an integer
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
