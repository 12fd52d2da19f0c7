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
//   power-of-two stride apart at every step. Tiles are staged in memory order (a reverse scan walks
//   the tile from its end), float32 tiles go through 4 x 4 SSE transposes where SSE2 is available,
//   and the next tile is software-prefetched. The tensor itself is never transposed.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include "scan.h"

namespace restorekit {
namespace {

constexpr int64_t kCols = 512;  // columns per task for the vertical scan (a few KB per row stream)
constexpr int64_t kRows = 16;   // rows advanced together by the horizontal scan
constexpr int64_t kSteps = 64;  // scan steps staged per tile by the horizontal scan
constexpr int64_t kAhead = 1;   // tiles prefetched ahead by the horizontal scan

// Software prefetch of the next rows or tiles (the hardware prefetchers follow descending walks and
// short runs that each start a new page poorly). A hint only: no effect on the results.
template <int kWrite = 0, typename scalar_t>
inline void prefetch_span(const scalar_t* p, int64_t len) {
#if defined(__GNUC__) || defined(__clang__)
  constexpr int64_t kLine = 64 / sizeof(scalar_t);
  for (int64_t k = 0; k < len; k += kLine) __builtin_prefetch(p + k, kWrite, 2);
  __builtin_prefetch(p + len - 1, kWrite, 2);
#else
  (void)p, (void)len;
#endif
}

template <int kWrite = 0, typename scalar_t>
inline void prefetch_tile(const scalar_t* p, int64_t w, int64_t n, int64_t len) {
  for (int64_t r = 0; r < n; ++r) prefetch_span<kWrite>(p + r * w, len);
}

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
        if (step + 1 < s.height) {
          const int64_t next = (reverse ? -1 : 1) * s.width;
          prefetch_span(xr + next, n);
          prefetch_span(gr + next, n);
          prefetch_span<1>(outr + next, n);
        }
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
        if (step > 0) {
          const int64_t next = off - (reverse ? -1 : 1) * s.width;  // the row visited next
          prefetch_span(grad + next, n);
          prefetch_span(g + next, n);
          prefetch_span(x + next, n);
          if (step > 1) prefetch_span(hs + next - (reverse ? -1 : 1) * s.width, n);
          prefetch_span<1>(dx + next, n);
          prefetch_span<1>(dg + next, n);
        }
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

// Transposing copies between kRows rows of memory (row stride `w`) and a step-major tile
// (tile[k][r] = row r, column c0 + k). Rows r >= n are left untouched. Tiles are always staged in
// memory order; a reverse scan walks the tile from its end instead of reading memory backwards.
template <typename scalar_t, typename acc_t>
inline void load_tile(acc_t (*__restrict tile)[kRows], const scalar_t* __restrict src, int64_t w, int64_t n,
                      int64_t len) {
  for (int64_t r = 0; r < n; ++r) {
    const scalar_t* row = src + r * w;
    for (int64_t k = 0; k < len; ++k) tile[k][r] = static_cast<acc_t>(row[k]);
  }
}

template <typename scalar_t, typename acc_t>
inline void store_tile(scalar_t* __restrict dst, const acc_t (*__restrict tile)[kRows], int64_t w, int64_t n,
                       int64_t len) {
  for (int64_t r = 0; r < n; ++r) {
    scalar_t* row = dst + r * w;
    for (int64_t k = 0; k < len; ++k) row[k] = static_cast<scalar_t>(tile[k][r]);
  }
}

#if defined(__SSE2__)
// float32: 4 x 4 blocks through SSE registers (always available on x86-64); plain copies, so the
// values are bit-for-bit those of the scalar loops.
template <>
inline void load_tile<float, float>(float (*__restrict tile)[kRows], const float* __restrict src, int64_t w,
                                    int64_t n, int64_t len) {
  const int64_t full = n & ~int64_t(3);
  const int64_t len4 = len & ~int64_t(3);
  for (int64_t r = 0; r < full; r += 4) {
    const float* s0 = src + r * w;
    const float* s1 = s0 + w;
    const float* s2 = s1 + w;
    const float* s3 = s2 + w;
    int64_t k = 0;
    for (; k < len4; k += 4) {
      __m128 a = _mm_loadu_ps(s0 + k);
      __m128 b = _mm_loadu_ps(s1 + k);
      __m128 c = _mm_loadu_ps(s2 + k);
      __m128 d = _mm_loadu_ps(s3 + k);
      _MM_TRANSPOSE4_PS(a, b, c, d);
      _mm_store_ps(&tile[k][r], a);
      _mm_store_ps(&tile[k + 1][r], b);
      _mm_store_ps(&tile[k + 2][r], c);
      _mm_store_ps(&tile[k + 3][r], d);
    }
    for (; k < len; ++k) {
      tile[k][r] = s0[k];
      tile[k][r + 1] = s1[k];
      tile[k][r + 2] = s2[k];
      tile[k][r + 3] = s3[k];
    }
  }
  for (int64_t r = full; r < n; ++r) {
    const float* row = src + r * w;
    for (int64_t k = 0; k < len; ++k) tile[k][r] = row[k];
  }
}

template <>
inline void store_tile<float, float>(float* __restrict dst, const float (*__restrict tile)[kRows], int64_t w,
                                     int64_t n, int64_t len) {
  const int64_t full = n & ~int64_t(3);
  const int64_t len4 = len & ~int64_t(3);
  for (int64_t r = 0; r < full; r += 4) {
    float* d0 = dst + r * w;
    float* d1 = d0 + w;
    float* d2 = d1 + w;
    float* d3 = d2 + w;
    int64_t k = 0;
    for (; k < len4; k += 4) {
      __m128 a = _mm_load_ps(&tile[k][r]);
      __m128 b = _mm_load_ps(&tile[k + 1][r]);
      __m128 c = _mm_load_ps(&tile[k + 2][r]);
      __m128 d = _mm_load_ps(&tile[k + 3][r]);
      _MM_TRANSPOSE4_PS(a, b, c, d);
      _mm_storeu_ps(d0 + k, a);
      _mm_storeu_ps(d1 + k, b);
      _mm_storeu_ps(d2 + k, c);
      _mm_storeu_ps(d3 + k, d);
    }
    for (; k < len; ++k) {
      d0[k] = tile[k][r];
      d1[k] = tile[k][r + 1];
      d2[k] = tile[k][r + 2];
      d3[k] = tile[k][r + 3];
    }
  }
  for (int64_t r = full; r < n; ++r) {
    float* row = dst + r * w;
    for (int64_t k = 0; k < len; ++k) row[k] = tile[k][r];
  }
}
#endif

// One step of the forward recurrence over the kRows rows of a tile column (xb holds x, then h).
template <typename acc_t>
inline void forward_step(acc_t* __restrict xk, const acc_t* __restrict gk, acc_t* __restrict h) {
  for (int64_t r = 0; r < kRows; ++r) {
    const acc_t gv = gk[r];
    const acc_t v = (acc_t(1) - gv) * xk[r] + gv * h[r];
    h[r] = v;
    xk[r] = v;
  }
}

template <typename scalar_t, bool reverse>
void forward_horizontal(const scalar_t* __restrict x, const scalar_t* __restrict g, scalar_t* __restrict out,
                        const ScanShape& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = s.planes * s.height;
  const int64_t blocks = (rows + kRows - 1) / kRows;
  const int64_t w = s.width;
  const int64_t tiles = (w + kSteps - 1) / kSteps;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    // Staging tiles, step-major: xb[k][r] is row r at column c0 + k. Rows are read and written front to
    // back (whole cache lines), and the recurrence runs over kRows rows in the inner loop.
    alignas(64) acc_t xb[kSteps][kRows] = {};
    alignas(64) acc_t gb[kSteps][kRows] = {};
    alignas(64) acc_t h[kRows];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t r0 = b * kRows;
      const int64_t n = std::min(kRows, rows - r0);
      const int64_t o = r0 * w;
      std::fill(h, h + kRows, acc_t(0));
      for (int64_t i = 0; i < tiles; ++i) {
        const int64_t c0 = (reverse ? tiles - 1 - i : i) * kSteps;
        const int64_t len = std::min(kSteps, w - c0);
        if (i + kAhead < tiles) {
          const int64_t c1 = (reverse ? tiles - 1 - (i + kAhead) : i + kAhead) * kSteps;
          const int64_t len1 = std::min(kSteps, w - c1);
          prefetch_tile(x + o + c1, w, n, len1);
          prefetch_tile(g + o + c1, w, n, len1);
          prefetch_tile<1>(out + o + c1, w, n, len1);
        }
        load_tile<scalar_t, acc_t>(xb, x + o + c0, w, n, len);
        load_tile<scalar_t, acc_t>(gb, g + o + c0, w, n, len);
        if (reverse) {
          for (int64_t k = len - 1; k >= 0; --k) forward_step<acc_t>(xb[k], gb[k], h);
        } else {
          for (int64_t k = 0; k < len; ++k) forward_step<acc_t>(xb[k], gb[k], h);
        }
        store_tile<scalar_t, acc_t>(out + o + c0, xb, w, n, len);
      }
    }
  });
}

// One step of the backward recurrence over the kRows rows of a tile column: tb holds grad, then dx;
// xb holds x, then dg; hp is h at the previous scan step.
template <typename acc_t>
inline void backward_step(acc_t* __restrict tk, const acc_t* __restrict gk, acc_t* __restrict xk,
                          const acc_t* __restrict hp, acc_t* __restrict d, acc_t* __restrict gn) {
  for (int64_t r = 0; r < kRows; ++r) {
    const acc_t gv = gk[r];
    const acc_t dv = tk[r] + gn[r] * d[r];
    d[r] = dv;
    gn[r] = gv;
    tk[r] = (acc_t(1) - gv) * dv;
    xk[r] = (hp[r] - xk[r]) * dv;
  }
}

template <typename scalar_t, bool reverse>
void backward_horizontal(const scalar_t* __restrict grad, const scalar_t* __restrict g, const scalar_t* __restrict x,
                         const scalar_t* __restrict hs, scalar_t* __restrict dx, scalar_t* __restrict dg,
                         const ScanShape& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = s.planes * s.height;
  const int64_t blocks = (rows + kRows - 1) / kRows;
  const int64_t w = s.width;
  const int64_t tiles = (w + kSteps - 1) / kSteps;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    // Same staging as the forward; tiles are visited from the last scan step back to the first. The h
    // tile holds the tile's own columns plus, one slot beyond them on the side of the previous scan step,
    // the neighbouring column (0 at the line's start), so h_{t-1} is the same tile shifted by one.
    alignas(64) acc_t tb[kSteps][kRows] = {};  // grad, then dx
    alignas(64) acc_t gb[kSteps][kRows] = {};
    alignas(64) acc_t xb[kSteps][kRows] = {};  // x, then dg
    alignas(64) acc_t hb[kSteps + 1][kRows] = {};
    alignas(64) acc_t d[kRows];
    alignas(64) acc_t gn[kRows];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t r0 = b * kRows;
      const int64_t n = std::min(kRows, rows - r0);
      const int64_t o = r0 * w;
      std::fill(d, d + kRows, acc_t(0));
      std::fill(gn, gn + kRows, acc_t(0));
      for (int64_t i = 0; i < tiles; ++i) {
        const int64_t c0 = (reverse ? i : tiles - 1 - i) * kSteps;
        const int64_t len = std::min(kSteps, w - c0);
        if (i + kAhead < tiles) {
          const int64_t c1 = (reverse ? i + kAhead : tiles - 1 - (i + kAhead)) * kSteps;
          const int64_t len1 = std::min(kSteps, w - c1);
          prefetch_tile(grad + o + c1, w, n, len1);
          prefetch_tile(g + o + c1, w, n, len1);
          prefetch_tile(x + o + c1, w, n, len1);
          prefetch_tile(hs + o + c1, w, n, len1);
          prefetch_tile<1>(dx + o + c1, w, n, len1);
          prefetch_tile<1>(dg + o + c1, w, n, len1);
        }
        load_tile<scalar_t, acc_t>(tb, grad + o + c0, w, n, len);
        load_tile<scalar_t, acc_t>(gb, g + o + c0, w, n, len);
        load_tile<scalar_t, acc_t>(xb, x + o + c0, w, n, len);
        if (reverse) {
          load_tile<scalar_t, acc_t>(hb, hs + o + c0, w, n, len);
          const bool edge = c0 + len < w;
          for (int64_t r = 0; r < n; ++r)
            hb[len][r] = edge ? static_cast<acc_t>(hs[o + r * w + c0 + len]) : acc_t(0);
          for (int64_t k = 0; k < len; ++k) backward_step<acc_t>(tb[k], gb[k], xb[k], hb[k + 1], d, gn);
        } else {
          load_tile<scalar_t, acc_t>(hb + 1, hs + o + c0, w, n, len);
          const bool edge = c0 > 0;
          for (int64_t r = 0; r < n; ++r) hb[0][r] = edge ? static_cast<acc_t>(hs[o + r * w + c0 - 1]) : acc_t(0);
          for (int64_t k = len - 1; k >= 0; --k) backward_step<acc_t>(tb[k], gb[k], xb[k], hb[k], d, gn);
        }
        store_tile<scalar_t, acc_t>(dx + o + c0, tb, w, n, len);
        store_tile<scalar_t, acc_t>(dg + o + c0, xb, w, n, len);
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
      auto fn = reverse ? forward_horizontal<scalar_t, true> : forward_horizontal<scalar_t, false>;
      fn(x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), s);
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
    const scalar_t* args[] = {grad.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
                              x.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>()};
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    scalar_t* dgp = dg.mutable_data_ptr<scalar_t>();
    if (!horizontal) {
      backward_vertical<scalar_t>(args[0], args[1], args[2], args[3], dxp, dgp, s, reverse);
    } else if (reverse) {
      backward_horizontal<scalar_t, true>(args[0], args[1], args[2], args[3], dxp, dgp, s);
    } else {
      backward_horizontal<scalar_t, false>(args[0], args[1], args[2], args[3], dxp, dgp, s);
    }
  });
  return {dx, dg};
}

}  // namespace

TORCH_LIBRARY_IMPL(restorekit, CPU, m) {
  m.impl("scan", &scan_cpu);
  m.impl("scan_backward", &scan_backward_cpu);
}

}  // namespace restorekit
