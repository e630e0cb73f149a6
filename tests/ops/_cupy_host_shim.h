// Host shim: lets qrnn_lm/ops/forget_mult/forget_mult.cu compile as plain C++ for the CPU tests.
//
// It stands in for what NVRTC provides on the GPU: the CUDA qualifiers (as nothing / inline), the
// thread coordinates (globals that the launcher in _cupy_host_driver.cpp sets before calling a
// kernel for each (block, thread) pair), the float <-> bits intrinsics, and the fp16 conversions
// that the .cu does with PTX `cvt` instructions on the device (here in portable integer code,
// rounding to nearest even like the hardware; the tests check them against numpy).
#pragma once

#include <cmath>
#include <cstring>

#define QRNN_HOST_SHIM 1
#define __global__
#define __device__
#define __forceinline__ inline

struct qrnn_dim3 {
    unsigned int x, y, z;
};
static qrnn_dim3 gridDim, blockDim, blockIdx, threadIdx;

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// IEEE half (1 sign, 5 exponent, 10 mantissa bits) -> float: exact.
inline float qrnn_half_bits_to_float(unsigned short bits) {
    const unsigned int sign = (unsigned int)(bits & 0x8000u) << 16;
    const unsigned int exponent = (bits >> 10) & 0x1fu;
    const unsigned int mantissa = bits & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
        const float magnitude = std::ldexp((float)mantissa, -24);
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) {  // inf or NaN
        return __uint_as_float(sign | 0x7f800000u | (mantissa << 13));
    }
    return __uint_as_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));  // rebias 15 -> 127
}

// float -> IEEE half, rounding to nearest even; overflow gives inf, NaN stays NaN.
inline unsigned short qrnn_float_to_half_bits(float value) {
    const unsigned int u = __float_as_uint(value);
    const unsigned int sign = (u >> 16) & 0x8000u;
    const unsigned int magnitude = u & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);       // NaN
    if (magnitude >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);      // >= 65520: inf
    if (magnitude < 0x38800000u) {  // below 2^-14: a subnormal half, i.e. a multiple of 2^-24
        // Scaling by 2^24 is exact; nearbyint rounds half to even in the default rounding mode.
        const float scaled = __uint_as_float(magnitude) * 16777216.0f;
        return (unsigned short)(sign | (unsigned int)std::nearbyint(scaled));
    }
    // Normal: drop 13 mantissa bits with round half to even (a carry may bump the exponent),
    // then rebias the exponent from 127 to 15.
    const unsigned int rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
    return (unsigned short)(sign | ((rounded - (112u << 23)) >> 13));
}
