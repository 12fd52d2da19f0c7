// The gated linear recurrence h_t = (1 - g_t) * x_t + g_t * h_{t-1} (h_{-1} = 0) along the width
// ("horizontal") or the height of the last two dimensions, forward or reverse.
//
// Every step rounds exactly like restorekit/ops/reference.py: a = 1 - g, b = a * x, c = g * h,
// h = b + c, each rounded once. The C++ is compiled with -ffp-contract=off and the CUDA code uses
// __fmul_rn/__fadd_rn/__fsub_rn (and --fmad=false), so float32 results match the reference bit for bit.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace restorekit {

// Geometry of a scan over a contiguous tensor (..., H, W): `planes` independent H x W images.
struct ScanShape {
  int64_t planes;
  int64_t height;
  int64_t width;
};

inline ScanShape scan_shape(const at::Tensor& x) {
  const int64_t nd = x.dim();
  const int64_t h = x.size(nd - 2);
  const int64_t w = x.size(nd - 1);
  const int64_t planes = (h == 0 || w == 0) ? 0 : x.numel() / (h * w);
  return {planes, h, w};
}

inline void check_scan_args(const at::Tensor& x, const at::Tensor& g, const char* op) {
  TORCH_CHECK(x.dim() >= 2, op, ": x needs at least 2 dimensions (..., H, W), got ", x.sizes());
  TORCH_CHECK(x.sizes() == g.sizes(), op, ": one gate per element: x has shape ", x.sizes(), ", g ", g.sizes());
  TORCH_CHECK(x.scalar_type() == g.scalar_type(), op, ": x is ", x.scalar_type(), " but g is ", g.scalar_type());
  TORCH_CHECK(x.device() == g.device(), op, ": x is on ", x.device(), " but g is on ", g.device());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": needs a floating dtype, got ", x.scalar_type());
}

}  // namespace restorekit
