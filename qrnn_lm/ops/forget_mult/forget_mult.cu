// ForgetMult CUDA C kernels, compiled at run time by NVRTC (through CuPy, see cupy.py).
//
// Shapes: T = time steps, B = batch, H = hidden lanes. Tensors are time-major [T, B, H] and
// contiguous, so element (t, lane) with lane = b * H + h sits at t * lanes + lane (lanes = B * H).
//
// Recurrence (the contract in README.md beside this file, ground truth in naive.py):
//     h_t = f_t * x_t + (1 - f_t) * h_{t-1},   h_{-1} = h0
// One thread per lane, a sequential loop over time: neighbouring threads touch neighbouring
// addresses at every step, so loads and stores coalesce. Arithmetic is done in float (double for
// double storage); fp16 and bf16 are stored as 16-bit patterns and converted on load and store.
//
// The file includes no header on purpose: NVRTC then needs no include path (CuPy's lookup of
// cuda_fp16.h / cuda_bf16.h is a known source of install trouble). The tests also compile this
// very file as C++ on the CPU, after a small shim header that defines QRNN_HOST_SHIM,
// blockIdx/threadIdx/blockDim, the CUDA qualifiers and the fp16 conversions.

#define QRNN_DEVICE __device__ __forceinline__

#ifndef QRNN_HOST_SHIM

// fp16 <-> float with the hardware conversion instructions (round to nearest even).
QRNN_DEVICE float qrnn_half_bits_to_float(unsigned short bits) {
    float value;
    asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(bits));
    return value;
}

QRNN_DEVICE unsigned short qrnn_float_to_half_bits(float value) {
    unsigned short bits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(value));
    return bits;
}
#endif  // QRNN_HOST_SHIM

// 16-bit storage types. Two distinct structs (not one typedef) so overloads can tell them apart.
struct qrnn_half { unsigned short bits; };
struct qrnn_bfloat16 { unsigned short bits; };

// bfloat16 is the top half of a float32: widening is a shift, narrowing rounds to nearest even.
// Plain integer code, so it works on every GPU architecture and is the same code on the host.
QRNN_DEVICE float qrnn_bfloat16_bits_to_float(unsigned short bits) {
    return __uint_as_float(((unsigned int)bits) << 16);
}

QRNN_DEVICE unsigned short qrnn_float_to_bfloat16_bits(float value) {
    unsigned int u = __float_as_uint(value);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((u >> 16) | 0x0040u);  // NaN stays a (quiet) NaN
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round half to even; overflow carries into +-inf
    return (unsigned short)(u >> 16);
}

// qrnn_load(): storage -> accumulation type.  qrnn_store(): accumulation type -> storage.
QRNN_DEVICE float qrnn_load(float v) { return v; }
QRNN_DEVICE double qrnn_load(double v) { return v; }
QRNN_DEVICE float qrnn_load(qrnn_half v) { return qrnn_half_bits_to_float(v.bits); }
QRNN_DEVICE float qrnn_load(qrnn_bfloat16 v) { return qrnn_bfloat16_bits_to_float(v.bits); }

QRNN_DEVICE void qrnn_store(float* dst, float v) { *dst = v; }
QRNN_DEVICE void qrnn_store(double* dst, double v) { *dst = v; }
QRNN_DEVICE void qrnn_store(qrnn_half* dst, float v) { dst->bits = qrnn_float_to_half_bits(v); }
QRNN_DEVICE void qrnn_store(qrnn_bfloat16* dst, float v) { dst->bits = qrnn_float_to_bfloat16_bits(v); }

// This thread's lane, or -1 past the last lane (the last block is only partly used).
QRNN_DEVICE long long qrnn_lane(long long lanes) {
    long long lane = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    return lane < lanes ? lane : -1;
}

// Valid length of this lane's sequence: lengths[b] (clamped to [0, T] so a bad value can never
// write out of bounds), or T when lengths is a null pointer.
QRNN_DEVICE long long qrnn_length(const long long* lengths, long long lane, long long hidden,
                                  long long seq_len) {
    if (lengths == 0) return seq_len;
    long long length = lengths[lane / hidden];
    return length < 0 ? 0 : (length > seq_len ? seq_len : length);
}

// Forward: h[t] for every t of one lane. `step` counts recurrence steps 0..len-1; the time index
// of a step is `step` (reverse = 0) or `len - 1 - step` (reverse != 0). Steps t >= len are
// padding: h = 0, and they do not touch the carried state.
template <typename S, typename A>
QRNN_DEVICE void forget_mult_forward(const S* __restrict__ f, const S* __restrict__ x,
                                     const S* __restrict__ h0, const long long* __restrict__ lengths,
                                     S* __restrict__ h, long long seq_len, long long lanes,
                                     long long hidden, int reverse) {
    const long long lane = qrnn_lane(lanes);
    if (lane < 0) return;
    const long long len = qrnn_length(lengths, lane, hidden, seq_len);
    A prev = qrnn_load(h0[lane]);
    for (long long step = 0; step < len; ++step) {
        const long long t = reverse ? len - 1 - step : step;
        const long long i = t * lanes + lane;
        const A ft = qrnn_load(f[i]);
        prev = ft * qrnn_load(x[i]) + ((A)1 - ft) * prev;
        qrnn_store(h + i, prev);
    }
    for (long long t = len; t < seq_len; ++t) qrnn_store(h + t * lanes + lane, (A)0);
}

// Backward: walks the steps in the opposite order of the forward pass, carrying
// carry = (1 - f at step s+1) * g_{s+1}, the part of step s's total gradient that comes from later
// steps. With g_s = grad_h[s] + carry:
//     grad_x[s] = f[s] * g_s,  grad_f[s] = (x[s] - h_prev(s)) * g_s,  carry <- (1 - f[s]) * g_s
// where h_prev(s) is h at the previous step (read back from the forward output) or h0 at step 0.
// After the loop, carry is grad_h0 (0 when len = 0). Padding steps get zero gradients.
template <typename S, typename A>
QRNN_DEVICE void forget_mult_backward(const S* __restrict__ grad_h, const S* __restrict__ f,
                                      const S* __restrict__ x, const S* __restrict__ h,
                                      const S* __restrict__ h0, const long long* __restrict__ lengths,
                                      S* __restrict__ grad_f, S* __restrict__ grad_x,
                                      S* __restrict__ grad_h0, long long seq_len, long long lanes,
                                      long long hidden, int reverse) {
    const long long lane = qrnn_lane(lanes);
    if (lane < 0) return;
    const long long len = qrnn_length(lengths, lane, hidden, seq_len);
    A carry = (A)0;
    for (long long step = len - 1; step >= 0; --step) {
        const long long t = reverse ? len - 1 - step : step;
        const long long i = t * lanes + lane;
        const A g = qrnn_load(grad_h[i]) + carry;
        const A ft = qrnn_load(f[i]);
        // The previous step of step `step` lives at time t - 1 (forward walk) or t + 1 (reverse).
        const A h_prev = step > 0 ? qrnn_load(h[(reverse ? t + 1 : t - 1) * lanes + lane])
                                  : qrnn_load(h0[lane]);
        qrnn_store(grad_x + i, ft * g);
        qrnn_store(grad_f + i, (qrnn_load(x[i]) - h_prev) * g);
        carry = ((A)1 - ft) * g;
    }
    qrnn_store(grad_h0 + lane, carry);
    for (long long t = len; t < seq_len; ++t) {
        qrnn_store(grad_f + t * lanes + lane, (A)0);
        qrnn_store(grad_x + t * lanes + lane, (A)0);
    }
}

// extern "C" entry points, one pair per storage type, so RawModule.get_function finds them by
// their plain names: forget_mult_fwd_<suffix> and forget_mult_bwd_<suffix>.
// Launch: 1-D grid, 1-D blocks, one thread per lane (grid * block >= B * H). Arguments: device
// pointers, then seq_len = T, lanes = B * H, hidden = H (all 64-bit), reverse (32-bit, 0 or 1).
// `lengths` may be a null pointer (every sequence has length T).
#define QRNN_FORGET_MULT_ENTRY_POINTS(S, A, SUFFIX)                                              \
    extern "C" __global__ void forget_mult_fwd_##SUFFIX(                                         \
        const S* __restrict__ f, const S* __restrict__ x, const S* __restrict__ h0,              \
        const long long* __restrict__ lengths, S* __restrict__ h, long long seq_len,             \
        long long lanes, long long hidden, int reverse) {                                        \
        forget_mult_forward<S, A>(f, x, h0, lengths, h, seq_len, lanes, hidden, reverse);        \
    }                                                                                            \
    extern "C" __global__ void forget_mult_bwd_##SUFFIX(                                         \
        const S* __restrict__ grad_h, const S* __restrict__ f, const S* __restrict__ x,          \
        const S* __restrict__ h, const S* __restrict__ h0,                                       \
        const long long* __restrict__ lengths, S* __restrict__ grad_f, S* __restrict__ grad_x,   \
        S* __restrict__ grad_h0, long long seq_len, long long lanes, long long hidden,           \
        int reverse) {                                                                           \
        forget_mult_backward<S, A>(grad_h, f, x, h, h0, lengths, grad_f, grad_x, grad_h0,        \
                                   seq_len, lanes, hidden, reverse);                             \
    }

QRNN_FORGET_MULT_ENTRY_POINTS(float, float, f32)
QRNN_FORGET_MULT_ENTRY_POINTS(qrnn_half, float, f16)
QRNN_FORGET_MULT_ENTRY_POINTS(qrnn_bfloat16, float, bf16)
QRNN_FORGET_MULT_ENTRY_POINTS(double, double, f64)
