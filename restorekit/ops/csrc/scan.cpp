// Operator schemas. Kernels: scan_cpu.cpp (CPU) and scan_cuda.cu (CUDA); the fake (meta) kernels
// and the autograd formula are registered from Python (restorekit/ops/__init__.py).
#include <torch/library.h>

TORCH_LIBRARY(restorekit, m) {
  m.def("scan(Tensor x, Tensor g, bool horizontal, bool reverse) -> Tensor");
  m.def(
      "scan_backward(Tensor grad, Tensor g, Tensor x, Tensor h, bool horizontal, bool reverse) "
      "-> (Tensor, Tensor)");
}
