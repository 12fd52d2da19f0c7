// CUDA kernels of the recurrent scan. One launch per call, whatever the direction.
//
// - Along the height (vertical): one thread per column; at every step a warp reads 32 consecutive
//   columns of one row, so all loads and stores are coalesced.
// - Along the width (horizontal): one warp per 32 rows. The warp stages the next kSteps columns of
//   its 32 rows in shared memory (each load instruction reads 32 consecutive columns of one row,
//   coalesced), then lane r runs the recurrence of row r through the tile and the results go back
//   through the same tile with coalesced stores. The tensor is never transposed in memory.
//
// Every step rounds like the reference (restorekit/ops/reference.py): a = 1 - g, b = a * x,
// c = g * h, h = b + c, each rounded once. The explicit __f*_rn / __d*_rn intrinsics are never
// contracted into an FMA (and the extension is built with --fmad=false as well).
//
// Headers: only c10/ATen core and the CUDA runtime. The CPU-only torch wheel ships c10/cuda/*.h but
// not the generated c10/cuda/impl/cuda_cmake_macros.h they include, so c10::cuda::CUDAGuard,
// getCurrentCUDAStream and C10_CUDA_KERNEL_LAUNCH_CHECK are reached through their device-generic
// equivalents (c10::DeviceGuard, the device's current c10::Stream and its native handle,
// cudaGetLastError). The same source therefore compiles against a CPU wheel's headers
// (tests/test_scan.py checks that with nvcc) and builds unchanged with a CUDA torch.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <tuple>

#include "scan.h"

namespace restorekit {
namespace {

constexpr int kWarp = 32;
constexpr int kSteps = 32;        // columns staged per tile by the horizontal kernels
constexpr int kThreads = 256;     // threads per block of the vertical kernels

__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// h = (1 - g) * x + g * h_prev
template <typename acc_t>
__device__ __forceinline__ acc_t step(acc_t g, acc_t x, acc_t h) {
  return add_rn(mul_rn(sub_rn(acc_t(1), g), x), mul_rn(g, h));
}

__device__ __forceinline__ int64_t col_of(int64_t step, int64_t w, bool reverse) {
  return reverse ? w - 1 - step : step;
}

// ------------------------------------------------------------------------------------ vertical
template <typename scalar_t>
__global__ void forward_vertical(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                 scalar_t* __restrict__ out, int64_t planes, int64_t height, int64_t width,
                                 bool reverse) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= planes * width) return;
  const int64_t base = (idx / width) * height * width + idx % width;
  acc_t h = 0;
  for (int64_t s = 0; s < height; ++s) {
    const int64_t i = base + (reverse ? height - 1 - s : s) * width;
    h = step<acc_t>(static_cast<acc_t>(g[i]), static_cast<acc_t>(x[i]), h);
    out[i] = static_cast<scalar_t>(h);
  }
}

// d_t = grad_t + g_{t+1} * d_{t+1}; dx_t = (1 - g_t) * d_t; dg_t = (h_{t-1} - x_t) * d_t
template <typename scalar_t>
__global__ void backward_vertical(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ g,
                                  const scalar_t* __restrict__ x, const scalar_t* __restrict__ hs,
                                  scalar_t* __restrict__ dx, scalar_t* __restrict__ dg, int64_t planes,
                                  int64_t height, int64_t width, bool reverse) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= planes * width) return;
  const int64_t base = (idx / width) * height * width + idx % width;
  acc_t d = 0;
  acc_t gn = 0;
  for (int64_t s = height - 1; s >= 0; --s) {
    const int64_t row = reverse ? height - 1 - s : s;
    const int64_t i = base + row * width;
    const acc_t gv = static_cast<acc_t>(g[i]);
    d = add_rn(static_cast<acc_t>(grad[i]), mul_rn(gn, d));
    gn = gv;
    const acc_t hp = s == 0 ? acc_t(0) : static_cast<acc_t>(hs[base + (reverse ? row + 1 : row - 1) * width]);
    dx[i] = static_cast<scalar_t>(mul_rn(sub_rn(acc_t(1), gv), d));
    dg[i] = static_cast<scalar_t>(mul_rn(sub_rn(hp, static_cast<acc_t>(x[i])), d));
  }
}

// ---------------------------------------------------------------------------------- horizontal
template <typename acc_t>
struct Tile {
  acc_t v[kWarp][kSteps + 1];  // [row][step]; +1 column: lane r reading row r is bank-conflict free
};

// Warps per block for a kernel staging `tiles` tiles per warp: up to 4, within 40 KB of static shared memory.
template <typename acc_t>
constexpr int warps_for(int tiles) {
  const int fit = static_cast<int>((40 * 1024) / (tiles * sizeof(Tile<acc_t>)));
  return fit < 1 ? 1 : (fit > 4 ? 4 : fit);
}

template <typename scalar_t, int kWarpsPerBlock>
__global__ void forward_horizontal(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                   scalar_t* __restrict__ out, int64_t rows, int64_t width, bool reverse) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ Tile<acc_t> xs[kWarpsPerBlock];
  __shared__ Tile<acc_t> gs[kWarpsPerBlock];
  const int lane = threadIdx.x;
  const int warp = threadIdx.y;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp) * kWarp;
  if (row0 >= rows) return;  // whole warp leaves together
  const int nrows = static_cast<int>(min(static_cast<int64_t>(kWarp), rows - row0));
  acc_t h = 0;
  for (int64_t s0 = 0; s0 < width; s0 += kSteps) {
    const int len = static_cast<int>(min(static_cast<int64_t>(kSteps), width - s0));
    for (int r = 0; r < nrows; ++r) {  // coalesced: lanes read consecutive columns of row r
      if (lane < len) {
        const int64_t i = (row0 + r) * width + col_of(s0 + lane, width, reverse);
        xs[warp].v[r][lane] = static_cast<acc_t>(x[i]);
        gs[warp].v[r][lane] = static_cast<acc_t>(g[i]);
      }
    }
    __syncwarp();
    if (lane < nrows) {
      for (int k = 0; k < len; ++k) {
        h = step<acc_t>(gs[warp].v[lane][k], xs[warp].v[lane][k], h);
        xs[warp].v[lane][k] = h;
      }
    }
    __syncwarp();
    for (int r = 0; r < nrows; ++r) {
      if (lane < len) out[(row0 + r) * width + col_of(s0 + lane, width, reverse)] = static_cast<scalar_t>(xs[warp].v[r][lane]);
    }
    __syncwarp();
  }
}

template <typename scalar_t, int kWarpsPerBlock>
__global__ void backward_horizontal(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ g,
                                    const scalar_t* __restrict__ x, const scalar_t* __restrict__ hs,
                                    scalar_t* __restrict__ dx, scalar_t* __restrict__ dg, int64_t rows,
                                    int64_t width, bool reverse) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ Tile<acc_t> ts[kWarpsPerBlock];  // grad, then dx
  __shared__ Tile<acc_t> gs[kWarpsPerBlock];
  __shared__ Tile<acc_t> xs[kWarpsPerBlock];  // x, then dg
  __shared__ Tile<acc_t> hp[kWarpsPerBlock];  // h at the previous scan step
  const int lane = threadIdx.x;
  const int warp = threadIdx.y;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp) * kWarp;
  if (row0 >= rows) return;
  const int nrows = static_cast<int>(min(static_cast<int64_t>(kWarp), rows - row0));
  acc_t d = 0;
  acc_t gn = 0;
  const int64_t tiles = (width + kSteps - 1) / kSteps;
  for (int64_t t = tiles - 1; t >= 0; --t) {
    const int64_t s0 = t * kSteps;
    const int len = static_cast<int>(min(static_cast<int64_t>(kSteps), width - s0));
    for (int r = 0; r < nrows; ++r) {
      if (lane < len) {
        const int64_t o = (row0 + r) * width;
        const int64_t s = s0 + lane;
        const int64_t i = o + col_of(s, width, reverse);
        ts[warp].v[r][lane] = static_cast<acc_t>(grad[i]);
        gs[warp].v[r][lane] = static_cast<acc_t>(g[i]);
        xs[warp].v[r][lane] = static_cast<acc_t>(x[i]);
        hp[warp].v[r][lane] = s == 0 ? acc_t(0) : static_cast<acc_t>(hs[o + col_of(s - 1, width, reverse)]);
      }
    }
    __syncwarp();
    if (lane < nrows) {
      for (int k = len - 1; k >= 0; --k) {
        const acc_t gv = gs[warp].v[lane][k];
        d = add_rn(ts[warp].v[lane][k], mul_rn(gn, d));
        gn = gv;
        ts[warp].v[lane][k] = mul_rn(sub_rn(acc_t(1), gv), d);
        xs[warp].v[lane][k] = mul_rn(sub_rn(hp[warp].v[lane][k], xs[warp].v[lane][k]), d);
      }
    }
    __syncwarp();
    for (int r = 0; r < nrows; ++r) {
      if (lane < len) {
        const int64_t i = (row0 + r) * width + col_of(s0 + lane, width, reverse);
        dx[i] = static_cast<scalar_t>(ts[warp].v[r][lane]);
        dg[i] = static_cast<scalar_t>(xs[warp].v[r][lane]);
      }
    }
    __syncwarp();
  }
}

// ------------------------------------------------------------------------------------ launchers
// The stream PyTorch considers current on `device` (what c10::cuda::getCurrentCUDAStream returns).
cudaStream_t current_stream(const c10::Device& device) {
  const c10::Stream stream = c10::impl::getDeviceGuardImpl(device.type())->getStream(device);
  return static_cast<cudaStream_t>(stream.native_handle());
}

void check_launch() {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "restorekit scan kernel launch failed: ", cudaGetErrorString(err));
}

dim3 horizontal_grid(int64_t rows, int warps) {
  return dim3(static_cast<unsigned>((rows + kWarp * warps - 1) / (kWarp * warps)));
}

dim3 vertical_grid(const ScanShape& s) {
  return dim3(static_cast<unsigned>((s.planes * s.width + kThreads - 1) / kThreads));
}

at::Tensor scan_cuda(const at::Tensor& x_in, const at::Tensor& g_in, bool horizontal, bool reverse) {
  check_scan_args(x_in, g_in, "restorekit::scan");
  const c10::DeviceGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor g = g_in.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  const ScanShape s = scan_shape(x);
  if (s.planes == 0) return out;
  const cudaStream_t stream = current_stream(x_in.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "restorekit_scan_cuda", [&] {
    if (horizontal) {
      constexpr int warps = warps_for<at::opmath_type<scalar_t>>(2);
      forward_horizontal<scalar_t, warps><<<horizontal_grid(s.planes * s.height, warps), dim3(kWarp, warps), 0, stream>>>(
          x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
          s.planes * s.height, s.width, reverse);
    } else {
      forward_vertical<scalar_t><<<vertical_grid(s), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), s.planes,
          s.height, s.width, reverse);
    }
    check_launch();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> scan_backward_cuda(const at::Tensor& grad_in, const at::Tensor& g_in,
                                                      const at::Tensor& x_in, const at::Tensor& h_in,
                                                      bool horizontal, bool reverse) {
  check_scan_args(x_in, g_in, "restorekit::scan_backward");
  check_scan_args(x_in, grad_in, "restorekit::scan_backward");
  check_scan_args(x_in, h_in, "restorekit::scan_backward");
  const c10::DeviceGuard guard(x_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor g = g_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor h = h_in.contiguous();
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor dg = at::empty_like(x, at::MemoryFormat::Contiguous);
  const ScanShape s = scan_shape(x);
  if (s.planes == 0) return {dx, dg};
  const cudaStream_t stream = current_stream(x_in.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "restorekit_scan_backward_cuda", [&] {
    if (horizontal) {
      constexpr int warps = warps_for<at::opmath_type<scalar_t>>(4);
      backward_horizontal<scalar_t, warps><<<horizontal_grid(s.planes * s.height, warps), dim3(kWarp, warps), 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          h.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), dg.mutable_data_ptr<scalar_t>(),
          s.planes * s.height, s.width, reverse);
    } else {
      backward_vertical<scalar_t><<<vertical_grid(s), kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
          h.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), dg.mutable_data_ptr<scalar_t>(), s.planes,
          s.height, s.width, reverse);
    }
    check_launch();
  });
  return {dx, dg};
}

}  // namespace

TORCH_LIBRARY_IMPL(restorekit, CUDA, m) {
  m.impl("scan", &scan_cuda);
  m.impl("scan_backward", &scan_backward_cuda);
}

}  // namespace restorekit
