// CPU kernels of the recurrent scan: parallel over independent lines, the inner loop always runs
// along the contiguous W axis or over a block of rows, never through a transposed copy.
//
// - Along the height (vertical): the W columns of a plane are independent lines, so each step
//   updates a contiguous run of columns; the inner loop vectorises (no dependency between columns).
// - Along the width (horizontal): the lines are the rows themselves. A task takes a block of
//   kRows rows and walks them kSteps columns at a time: each row's next kSteps values are read
//   front to back into a small step-major tile (L1-resident, 4 KB per operand in float32), the
//   recurrence advances all kRows rows together (a contiguous, vectorisable inner loop with kRows
//   independent dependency chains), and the tile is written back row by row. Reading a row
//   segment at a time also avoids the cache-set conflicts of touching kRows rows that are a
//   power-of-two stride apart at every step. The tensor itself is never transposed.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "scan.h"

namespace restorekit {
namespace {

constexpr int64_t kCols = 512;  // columns per task for the vertical scan (a few KB per row stream)
constexpr int64_t kRows = 16;   // rows advanced together by the horizontal scan
constexpr int64_t kSteps = 64;  // scan steps staged per tile by the horizontal scan

template <typename scalar_t>
void forward_vertical(const scalar_t* __restrict x, const scalar_t* __restrict g, scalar_t* __restrict out,
                      const ScanShape& s, bool reverse) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t chunks = (s.width + kCols - 1) / kCols;
  at::parallel_for(0, s.planes * chunks, 1, [&](int64_t begin, int64_t end) {
    std::array<acc_t, kCols> h;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / chunks;
      const int64_t c0 = (task % chunks) * kCols;
      const int64_t n = std::min(kCols, s.width - c0);
      const int64_t base = p * s.height * s.width + c0;
      std::fill(h.begin(), h.begin() + n, acc_t(0));
      for (int64_t step = 0; step < s.height; ++step) {
        const int64_t row = reverse ? s.height - 1 - step : step;
        const scalar_t* xr = x + base + row * s.width;
        const scalar_t* gr = g + base + row * s.width;
        scalar_t* outr = out + base + row * s.width;
        for (int64_t j = 0; j < n; ++j) {
          const acc_t gv = static_cast<acc_t>(gr[j]);
          const acc_t v = (acc_t(1) - gv) * static_cast<acc_t>(xr[j]) + gv * h[j];
          h[j] = v;
          outr[j] = static_cast<scalar_t>(v);
        }
      }
    }
  });
}

// Column index of scan step `step` in a line of `w` columns.
inline int64_t col_of(int64_t step, int64_t w, bool reverse) { return reverse ? w - 1 - step : step; }

template <typename scalar_t>
void forward_horizontal(const scalar_t* __restrict x, const scalar_t* __restrict g, scalar_t* __restrict out,
                        const ScanShape& s, bool reverse) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = s.planes * s.height;
  const int64_t blocks = (rows + kRows - 1) / kRows;
  const int64_t w = s.width;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    // Staging tiles, step-major: xb[k][r] is row r at the block's k-th step. Rows are read and written
    // front to back (whole cache lines), and the recurrence runs over kRows rows in the inner loop.
    alignas(64) acc_t xb[kSteps][kRows] = {};
    alignas(64) acc_t gb[kSteps][kRows] = {};
    alignas(64) acc_t h[kRows];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t r0 = b * kRows;
      const int64_t n = std::min(kRows, rows - r0);
      std::fill(h, h + kRows, acc_t(0));
      for (int64_t s0 = 0; s0 < w; s0 += kSteps) {
        const int64_t len = std::min(kSteps, w - s0);
        for (int64_t r = 0; r < n; ++r) {
          const scalar_t* xr = x + (r0 + r) * w;
          const scalar_t* gr = g + (r0 + r) * w;
          for (int64_t k = 0; k < len; ++k) {
            const int64_t c = col_of(s0 + k, w, reverse);
            xb[k][r] = static_cast<acc_t>(xr[c]);
            gb[k][r] = static_cast<acc_t>(gr[c]);
          }
        }
        for (int64_t k = 0; k < len; ++k) {
          for (int64_t r = 0; r < kRows; ++r) {
            const acc_t gv = gb[k][r];
            const acc_t v = (acc_t(1) - gv) * xb[k][r] + gv * h[r];
            h[r] = v;
            xb[k][r] = v;  // the tile now holds h
          }
        }
        for (int64_t r = 0; r < n; ++r) {
          scalar_t* orow = out + (r0 + r) * w;
          for (int64_t k = 0; k < len; ++k) orow[col_of(s0 + k, w, reverse)] = static_cast<scalar_t>(xb[k][r]);
        }
      }
    }
  });
}

// Backward, walking the scan order from its last step: d_t = grad_t + g_{t+1} * d_{t+1},
// dx_t = (1 - g_t) * d_t, dg_t = (h_{t-1} - x_t) * d_t, with g_T = 0 and h_{-1} = 0.
template <typename scalar_t>
void backward_vertical(const scalar_t* __restrict grad, const scalar_t* __restrict g, const scalar_t* __restrict x,
                       const scalar_t* __restrict hs, scalar_t* __restrict dx, scalar_t* __restrict dg,
                       const ScanShape& s, bool reverse) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t chunks = (s.width + kCols - 1) / kCols;
  at::parallel_for(0, s.planes * chunks, 1, [&](int64_t begin, int64_t end) {
    std::array<acc_t, kCols> d;
    std::array<acc_t, kCols> gn;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t p = task / chunks;
      const int64_t c0 = (task % chunks) * kCols;
      const int64_t n = std::min(kCols, s.width - c0);
      const int64_t base = p * s.height * s.width + c0;
      std::fill(d.begin(), d.begin() + n, acc_t(0));
      std::fill(gn.begin(), gn.begin() + n, acc_t(0));
      for (int64_t step = s.height - 1; step >= 0; --step) {
        const int64_t row = reverse ? s.height - 1 - step : step;
        const int64_t off = base + row * s.width;
        const bool first = step == 0;
        const int64_t prev = base + (reverse ? row + 1 : row - 1) * s.width;  // h_{t-1} in scan order
        for (int64_t j = 0; j < n; ++j) {
          const acc_t gv = static_cast<acc_t>(g[off + j]);
          const acc_t dv = static_cast<acc_t>(grad[off + j]) + gn[j] * d[j];
          const acc_t hp = first ? acc_t(0) : static_cast<acc_t>(hs[prev + j]);
          d[j] = dv;
          gn[j] = gv;
          dx[off + j] = static_cast<scalar_t>((acc_t(1) - gv) * dv);
          dg[off + j] = static_cast<scalar_t>((hp - static_cast<acc_t>(x[off + j])) * dv);
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_horizontal(const scalar_t* __restrict grad, const scalar_t* __restrict g, const scalar_t* __restrict x,
                         const scalar_t* __restrict hs, scalar_t* __restrict dx, scalar_t* __restrict dg,
                         const ScanShape& s, bool reverse) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = s.planes * s.height;
  const int64_t blocks = (rows + kRows - 1) / kRows;
  const int64_t w = s.width;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    // Same staging as the forward; tiles are visited from the last scan step back to the first.
    alignas(64) acc_t tb[kSteps][kRows] = {};  // grad, then dx
    alignas(64) acc_t gb[kSteps][kRows] = {};
    alignas(64) acc_t xb[kSteps][kRows] = {};  // x, then dg
    alignas(64) acc_t hb[kSteps][kRows] = {};  // h at the previous scan step (0 before the first)
    alignas(64) acc_t d[kRows];
    alignas(64) acc_t gn[kRows];
    const int64_t tiles = (w + kSteps - 1) / kSteps;
    for (int64_t b = begin; b < end; ++b) {
      const int64_t r0 = b * kRows;
      const int64_t n = std::min(kRows, rows - r0);
      std::fill(d, d + kRows, acc_t(0));
      std::fill(gn, gn + kRows, acc_t(0));
      for (int64_t tile = tiles - 1; tile >= 0; --tile) {
        const int64_t s0 = tile * kSteps;
        const int64_t len = std::min(kSteps, w - s0);
        for (int64_t r = 0; r < n; ++r) {
          const int64_t o = (r0 + r) * w;
          for (int64_t k = 0; k < len; ++k) {
            const int64_t step = s0 + k;
            const int64_t c = o + col_of(step, w, reverse);
            tb[k][r] = static_cast<acc_t>(grad[c]);
            gb[k][r] = static_cast<acc_t>(g[c]);
            xb[k][r] = static_cast<acc_t>(x[c]);
            hb[k][r] = step == 0 ? acc_t(0) : static_cast<acc_t>(hs[o + col_of(step - 1, w, reverse)]);
          }
        }
        for (int64_t k = len - 1; k >= 0; --k) {
          for (int64_t r = 0; r < kRows; ++r) {
            const acc_t gv = gb[k][r];
            const acc_t dv = tb[k][r] + gn[r] * d[r];
            d[r] = dv;
            gn[r] = gv;
            tb[k][r] = (acc_t(1) - gv) * dv;
            xb[k][r] = (hb[k][r] - xb[k][r]) * dv;
          }
        }
        for (int64_t r = 0; r < n; ++r) {
          const int64_t o = (r0 + r) * w;
          for (int64_t k = 0; k < len; ++k) {
            const int64_t c = o + col_of(s0 + k, w, reverse);
            dx[c] = static_cast<scalar_t>(tb[k][r]);
            dg[c] = static_cast<scalar_t>(xb[k][r]);
          }
        }
      }
    }
  });
}

at::Tensor scan_cpu(const at::Tensor& x_in, const at::Tensor& g_in, bool horizontal, bool reverse) {
  check_scan_args(x_in, g_in, "restorekit::scan");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor g = g_in.contiguous();
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  const ScanShape s = scan_shape(x);
  if (s.planes == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "restorekit_scan_cpu", [&] {
    if (horizontal) {
      forward_horizontal<scalar_t>(x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
                                   out.mutable_data_ptr<scalar_t>(), s, reverse);
    } else {
      forward_vertical<scalar_t>(x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
                                 out.mutable_data_ptr<scalar_t>(), s, reverse);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> scan_backward_cpu(const at::Tensor& grad_in, const at::Tensor& g_in,
                                                     const at::Tensor& x_in, const at::Tensor& h_in, bool horizontal,
                                                     bool reverse) {
  check_scan_args(x_in, g_in, "restorekit::scan_backward");
  check_scan_args(x_in, grad_in, "restorekit::scan_backward");
  check_scan_args(x_in, h_in, "restorekit::scan_backward");
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor g = g_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor h = h_in.contiguous();
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor dg = at::empty_like(x, at::MemoryFormat::Contiguous);
  const ScanShape s = scan_shape(x);
  if (s.planes == 0) return {dx, dg};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "restorekit_scan_backward_cpu", [&] {
    auto fn = horizontal ? backward_horizontal<scalar_t> : backward_vertical<scalar_t>;
    fn(grad.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
       h.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), dg.mutable_data_ptr<scalar_t>(), s, reverse);
  });
  return {dx, dg};
}

}  // namespace

TORCH_LIBRARY_IMPL(restorekit, CPU, m) {
  m.impl("scan", &scan_cpu);
  m.impl("scan_backward", &scan_backward_cpu);
}

}  // namespace restorekit
