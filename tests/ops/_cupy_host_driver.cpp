// CPU build of the ForgetMult CUDA C kernels, for tests only.
//
// Compiled by tests/ops/test_forget_mult_cupy.py into a shared library:
//     g++ -std=c++14 -O2 -shared -fPIC -I tests/ops -I qrnn_lm/ops/forget_mult _cupy_host_driver.cpp
// It includes the very forget_mult.cu that cupy.py hands to NVRTC, after the host shim, and
// exports one launcher with the calling convention of cuLaunchKernel: the kernel's name, a 1-D
// grid and block size, and `params`, an array of pointers to each argument's value. The launcher
// runs the kernel body once per (block, thread), one after another. That is faithful here because
// the ForgetMult threads never talk to each other (no shared memory, no __syncthreads).
#include "_cupy_host_shim.h"
#include "forget_mult.cu"

#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

namespace {

template <typename... Args, std::size_t... I>
void call_with_params(void (*kernel)(Args...), void** params, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_cv<Args>::type*>(params[I])...);
}

template <typename... Args>
void launch_on_host(void (*kernel)(Args...), unsigned int grid, unsigned int block, void** params) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned int b = 0; b < grid; ++b) {
        for (unsigned int t = 0; t < block; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            call_with_params(kernel, params, std::index_sequence_for<Args...>{});
        }
    }
}

}  // namespace

#define QRNN_HOST_KERNEL(name)                          \
    if (std::strcmp(kernel_name, #name) == 0) {         \
        launch_on_host(name, grid, block, params);      \
        return 0;                                       \
    }

// Returns 0 after running the kernel, -1 when no kernel has that name.
extern "C" int qrnn_host_launch(const char* kernel_name, unsigned int grid, unsigned int block,
                                void** params) {
    QRNN_HOST_KERNEL(forget_mult_fwd_f32)
    QRNN_HOST_KERNEL(forget_mult_bwd_f32)
    QRNN_HOST_KERNEL(forget_mult_fwd_f16)
    QRNN_HOST_KERNEL(forget_mult_bwd_f16)
    QRNN_HOST_KERNEL(forget_mult_fwd_bf16)
    QRNN_HOST_KERNEL(forget_mult_bwd_bf16)
    QRNN_HOST_KERNEL(forget_mult_fwd_f64)
    QRNN_HOST_KERNEL(forget_mult_bwd_f64)
    return -1;
}

// The 16-bit conversions the kernels use (qrnn_load / qrnn_store), over arrays, so the tests can
// check them against numpy and torch bit for bit.
extern "C" void qrnn_host_half_to_float(const unsigned short* bits, float* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = qrnn_load(qrnn_half{bits[i]});
}

extern "C" void qrnn_host_float_to_half(const float* values, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) {
        qrnn_half h;
        qrnn_store(&h, values[i]);
        out[i] = h.bits;
    }
}

extern "C" void qrnn_host_bfloat16_to_float(const unsigned short* bits, float* out, long long n) {
    for (long long i = 0; i < n; ++i) out[i] = qrnn_load(qrnn_bfloat16{bits[i]});
}

extern "C" void qrnn_host_float_to_bfloat16(const float* values, unsigned short* out, long long n) {
    for (long long i = 0; i < n; ++i) {
        qrnn_bfloat16 h;
        qrnn_store(&h, values[i]);
        out[i] = h.bits;
    }
}
