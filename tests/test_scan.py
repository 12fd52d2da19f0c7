"""The recurrent scan: reference vs a scalar oracle, native kernels vs the reference, autograd, compile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from restorekit import ops
from restorekit.ops import reference

DIRECTIONS = [(True, False), (True, True), (False, False), (False, True)]  # L->R, R->L, T->B, B->T
SHAPES = [(2, 3, 5, 7), (1, 1, 1, 9), (1, 2, 9, 1), (1, 1, 1, 1), (3, 17, 33), (2, 2, 19, 70), (1, 21, 130)]


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    # Module-scoped, so it runs before the per-test cache isolation: build (once per process) in a temp folder.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ops.CACHE_ENV, str(tmp_path_factory.mktemp("extensions")))  # no effect if already loaded
        mp.delenv(ops.BACKEND_ENV, raising=False)
        ok = ops.load_native()
    if not ok:
        pytest.skip(f"native scan unavailable here: {ops.backend_info()['reason']}")
    return torch.ops.restorekit


def _inputs(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    g = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)  # tanh range, like the net
    return x, g


def _oracle(x, g, horizontal, reverse):
    """Scalar loop in float64 over explicit indices: independent of the reference's tensor slicing."""
    x64, g64 = x.double().reshape(-1, *x.shape[-2:]), g.double().reshape(-1, *x.shape[-2:])
    if not horizontal:
        x64, g64 = x64.transpose(1, 2), g64.transpose(1, 2)
    out = torch.zeros_like(x64)
    for p in range(x64.shape[0]):
        for r in range(x64.shape[1]):
            h = 0.0
            cols = range(x64.shape[2] - 1, -1, -1) if reverse else range(x64.shape[2])
            for c in cols:
                gv = float(g64[p, r, c])
                h = (1 - gv) * float(x64[p, r, c]) + gv * h
                out[p, r, c] = h
    if not horizontal:
        out = out.transpose(1, 2)
    return out.reshape(x.shape)


@pytest.mark.parametrize("horizontal,reverse", DIRECTIONS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 4), (1, 4, 1)])
def test_reference_matches_scalar_oracle(shape, horizontal, reverse):
    x, g = _inputs(shape, torch.float64)
    torch.testing.assert_close(reference.scan_forward(x, g, horizontal, reverse), _oracle(x, g, horizontal, reverse))


@pytest.mark.parametrize("horizontal,reverse", DIRECTIONS)
def test_reference_backward_matches_autograd_of_the_recurrence(horizontal, reverse):
    x, g = _inputs((2, 3, 6, 5), torch.float64)
    x.requires_grad_(True)
    g.requires_grad_(True)
    dim = -1 if horizontal else -2
    steps = range(x.shape[dim] - 1, -1, -1) if reverse else range(x.shape[dim])
    h, outs = torch.zeros_like(x.select(dim, 0)), {}
    for t in steps:  # the recurrence written plainly, differentiated by autograd
        h = (1 - g.select(dim, t)) * x.select(dim, t) + g.select(dim, t) * h
        outs[t] = h
    y = torch.stack([outs[t] for t in range(x.shape[dim])], dim)
    grad = torch.randn_like(y)
    dx_ref, dg_ref = torch.autograd.grad(y, (x, g), grad)
    dx, dg = reference.scan_backward(grad, g.detach(), x.detach(), y.detach(), horizontal, reverse)
    torch.testing.assert_close(dx, dx_ref)
    torch.testing.assert_close(dg, dg_ref)


@pytest.mark.slow  # builds the native scan
@pytest.mark.parametrize("horizontal,reverse", DIRECTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_native_float32_is_bitwise_reference(native, shape, horizontal, reverse):
    x, g = _inputs(shape)
    h = native.scan(x, g, horizontal, reverse)
    assert torch.equal(h, reference.scan_forward(x, g, horizontal, reverse))
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    got = native.scan_backward(grad, g, x, h, horizontal, reverse)
    want = reference.scan_backward(grad, g, x, h, horizontal, reverse)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.slow  # builds the native scan
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("horizontal,reverse", DIRECTIONS)
def test_native_other_dtypes_match_reference(native, dtype, horizontal, reverse):
    # float64 computes in float64; half types accumulate in float32 and round only what they store.
    x, g = _inputs((2, 3, 11, 37), dtype)
    h = native.scan(x, g, horizontal, reverse)
    assert h.dtype == dtype
    assert torch.equal(h, reference.scan_forward(x, g, horizontal, reverse))
    grad = torch.randn(x.shape, dtype=torch.float64).to(dtype)
    got = native.scan_backward(grad, g, x, h, horizontal, reverse)
    want = reference.scan_backward(grad, g, x, h, horizontal, reverse)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    if dtype != torch.float64:  # and the accumulation really is float32: close to the float32 result
        h32 = native.scan(x.float(), g.float(), horizontal, reverse)
        torch.testing.assert_close(h.float(), h32, atol=0.02, rtol=0.02)


@pytest.mark.slow  # builds the native scan
def test_native_handles_non_contiguous_inputs(native):
    x, g = _inputs((2, 9, 4, 13))
    xt, gt = x.transpose(-1, -2), g.transpose(-1, -2)  # (2, 9, 13, 4), strided
    xs, gs = x[:, ::2, 1:, ::3], g[:, ::2, 1:, ::3]  # sliced
    for a, b in ((xt, gt), (xs, gs)):
        assert not a.is_contiguous()
        for horizontal, reverse in DIRECTIONS:
            want = reference.scan_forward(a.contiguous(), b.contiguous(), horizontal, reverse)
            assert torch.equal(native.scan(a, b, horizontal, reverse), want)
            assert torch.equal(ops.scan(a, b, horizontal, reverse), want)


@pytest.mark.slow  # builds the native scan
def test_native_rejects_bad_arguments(native):
    x, g = _inputs((1, 2, 3, 4))
    with pytest.raises(RuntimeError, match="one gate per element"):
        native.scan(x, g[..., :3], True, False)
    with pytest.raises(RuntimeError, match="Double"):
        native.scan(x, g.double(), True, False)
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        native.scan(x.flatten(), g.flatten(), True, False)
    with pytest.raises(ValueError, match="one gate per element"):
        ops.scan(x, g[..., :3])
    empty = torch.empty(2, 0, 5)
    assert native.scan(empty, empty, True, False).shape == (2, 0, 5)


@pytest.mark.slow  # builds the native scan
@pytest.mark.parametrize("horizontal,reverse", DIRECTIONS)
def test_gradcheck_native(native, horizontal, reverse):
    x, g = _inputs((2, 2, 5, 6), torch.float64)
    x.requires_grad_(True)
    g.requires_grad_(True)
    assert ops.backend() == "native"
    assert torch.autograd.gradcheck(lambda a, b: ops.scan(a, b, horizontal, reverse), (x, g))


def test_gradcheck_reference(monkeypatch):
    monkeypatch.setenv(ops.BACKEND_ENV, "reference")
    x, g = _inputs((1, 2, 4, 5), torch.float64)
    x.requires_grad_(True)
    g.requires_grad_(True)
    for horizontal, reverse in DIRECTIONS:
        assert torch.autograd.gradcheck(lambda a, b, hz=horizontal, rv=reverse: ops.scan(a, b, hz, rv), (x, g))


@pytest.mark.slow  # builds the native scan
@pytest.mark.parametrize("horizontal,reverse", [(True, False), (False, True)])
def test_opcheck(native, horizontal, reverse):
    x, g = _inputs((2, 3, 5, 4))
    x.requires_grad_(True)
    g.requires_grad_(True)
    torch.library.opcheck(native.scan.default, (x, g, horizontal, reverse))
    h = native.scan(x, g, horizontal, reverse).detach()
    torch.library.opcheck(
        native.scan_backward.default, (torch.randn_like(h), g.detach(), x.detach(), h, horizontal, reverse)
    )


@pytest.mark.slow  # builds the native scan
def test_torch_compile_parity(native):
    # One small graph: inductor compiles the convolutions around the op, which stays one opaque call.
    conv = torch.nn.Conv2d(2, 4, 3, padding=1)

    def f(x, g):
        return ops.scan(conv(x), torch.tanh(g), True, True).square().sum()

    x, g = _inputs((1, 2, 6, 7))
    g = torch.cat([g, g], 1)
    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x, g), f(x, g))


# torch.compile of the spatial RNN as a user's first call in a new process: nothing has loaded the native library,
# so dynamo meets the build (a threading.Lock, a file lock) while tracing. The test above cannot see that: its
# process loaded the library before compiling.
_FRESH_COMPILE = """
    import sys, torch
    from restorekit import ops
    from restorekit.archs.spatial_rnn import SpatialRNN
    assert "torch._dynamo" not in sys.modules, "importing the scan must not import torch._dynamo"
    torch.manual_seed(0)
    net = SpatialRNN(channels=4, pool_channels=2, guide=(4, 4, 4, 4, 4), head=4).eval()
    x = torch.rand(1, 3, 16, 20)
    assert not ops._state["loaded"], "the library must not be loaded before the compiled call"
    targets = []

    def recording(gm, example_inputs):
        targets.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    compiled = torch.compile(net, fullgraph=True, backend=BACKEND)
    with torch.no_grad():
        got = compiled(x)
        want = net(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    print(ops.backend(), sum("restorekit.scan" in t for t in targets))
"""


def _compile_in_fresh_process(backend: str) -> list[str]:
    cache = os.path.dirname(os.path.dirname(ops.backend_info()["library"]))  # the library the fixture built
    code = textwrap.dedent(_FRESH_COMPILE).replace("BACKEND", backend)
    out = _run(code, RESTOREKIT_EXT_CACHE=cache, OMP_NUM_THREADS="1", **{ops.BACKEND_ENV: "auto"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()


@pytest.mark.slow  # builds the native scan
def test_compile_fullgraph_in_a_fresh_process(native):
    # dynamo traces the whole network into one graph, with the eight scans as calls of the native op.
    assert _compile_in_fresh_process("recording") == ["native", "8"]


@pytest.mark.slow
def test_compile_fullgraph_inductor_in_a_fresh_process(native):
    # The same with the default backend, as a user writes it: torch.compile(net, fullgraph=True).
    assert _compile_in_fresh_process('"inductor"')[0] == "native"


@pytest.mark.slow  # builds the native scan
def test_backend_env_forces_the_reference(native, monkeypatch):
    x, g = _inputs((1, 2, 6, 7))
    assert ops.backend() == "native" and ops.backend_info()["backend"] == "native"
    monkeypatch.setenv(ops.BACKEND_ENV, "reference")
    info = ops.backend_info()
    assert ops.backend() == "reference" and info["backend"] == "reference" and ops.BACKEND_ENV in info["reason"]
    xr, gr = x.clone().requires_grad_(), g.clone().requires_grad_()
    ref = ops.scan(xr, gr, False, False)
    assert ref.grad_fn is not None and "ReferenceScan" in type(ref.grad_fn).__name__
    ref.sum().backward()
    monkeypatch.setenv(ops.BACKEND_ENV, "native")
    xn, gn = x.clone().requires_grad_(), g.clone().requires_grad_()
    nat = ops.scan(xn, gn, False, False)
    nat.sum().backward()
    assert torch.equal(nat, ref) and torch.equal(xn.grad, xr.grad) and torch.equal(gn.grad, gr.grad)
    monkeypatch.setenv(ops.BACKEND_ENV, "fastest")
    with pytest.raises(ops.ScanBackendError, match="auto, native, reference"):
        ops.scan(x, g)


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full)


@pytest.mark.slow  # spawns processes
def test_no_compiler_falls_back_with_one_warning(tmp_path):
    code = """
        import warnings, torch
        from restorekit import ops
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = torch.rand(1, 2, 3, 4)
            a = ops.scan(x, x, True, False); b = ops.scan(x, x, False, True)
        info = ops.backend_info()
        print(len([w for w in caught if "native spatial-RNN scan is unavailable" in str(w.message)]))
        print(info["backend"], "|", info["reason"])
    """
    env = {"CXX": "no-such-compiler-rk", "RESTOREKIT_EXT_CACHE": str(tmp_path), ops.BACKEND_ENV: "auto"}
    out = _run(code, **env)
    assert out.returncode == 0, out.stderr
    count, report = out.stdout.strip().splitlines()
    assert count == "1"
    assert report.startswith("reference |") and "no-such-compiler-rk" in report
    forced = _run(
        "import torch; from restorekit import ops; ops.scan(torch.rand(2, 2), torch.rand(2, 2))",
        **{**env, ops.BACKEND_ENV: "native"},
    )
    assert forced.returncode != 0 and "ScanBackendError" in forced.stderr and "no-such-compiler-rk" in forced.stderr


@pytest.mark.slow  # builds the native scan
def test_build_is_cached_and_reused(native):
    # A second process with the same cache loads the same library without recompiling it.
    info = ops.backend_info()
    library = info["library"]
    assert library and os.path.exists(library)
    before = {
        name: os.stat(os.path.join(os.path.dirname(library), name)).st_mtime_ns
        for name in os.listdir(os.path.dirname(library))
        if name.endswith((".o", ".so"))
    }
    code = "from restorekit import ops; print(ops.backend(), ops.backend_info()['library'])"
    cache = os.path.dirname(os.path.dirname(library))
    out = _run(code, RESTOREKIT_EXT_CACHE=cache, **{ops.BACKEND_ENV: "auto"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["native", library]
    after = {name: os.stat(os.path.join(os.path.dirname(library), name)).st_mtime_ns for name in before}
    assert len(before) >= 3 and after == before


@pytest.mark.slow  # builds the native scan
def test_ninja_from_the_wheel_leaves_path_alone(native, tmp_path):
    # The environment's bin/ need not be on PATH (a venv's python run without activating it): the build then
    # finds the ninja wheel's binary, and PATH is left exactly as it was (torch runs `ninja` by name, so it is
    # in front of PATH only during the build).
    ninja = pytest.importorskip("ninja")
    compiler = shutil.which(os.environ.get("CXX") or "c++")
    if compiler is None or os.path.dirname(compiler) == os.path.abspath(ninja.BIN_DIR):
        pytest.skip("needs a C++ compiler outside the folder of the ninja wheel's binary")
    tools = tmp_path / "bin"  # the compiler's folder without ninja
    tools.mkdir()
    for entry in os.scandir(os.path.dirname(compiler)):
        if entry.name != "ninja":
            os.symlink(entry.path, tools / entry.name)
    code = """
        import os, shutil
        from restorekit import ops
        before = os.environ["PATH"]
        info = ops.backend_info()
        print(shutil.which("ninja"), info["backend"], os.environ["PATH"] == before, "|", info["reason"])
    """
    cache = os.path.dirname(os.path.dirname(ops.backend_info()["library"]))
    out = _run(code, PATH=str(tools), RESTOREKIT_EXT_CACHE=cache, **{ops.BACKEND_ENV: "auto"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["None", "native", "True"], out.stdout


@pytest.mark.slow  # builds the native scan
def test_concurrent_first_use_builds_once(native, tmp_path):
    # Two processes start on an empty cache at once: the file lock lets one compile, the other waits and loads it.
    code = (
        "import torch; from restorekit import ops; ops.scan(torch.rand(2, 3), torch.rand(2, 3)); "
        "print(ops.backend(), ops.backend_info()['library'])"
    )
    env = {**os.environ, ops.CACHE_ENV: str(tmp_path), ops.BACKEND_ENV: "native"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    reports = [out.split() for out, _ in outs]
    assert reports[0] == reports[1] and reports[0][0] == "native"
    log = (tmp_path / os.path.basename(os.path.dirname(reports[0][1])) / ".ninja_log").read_text()
    assert sum("\tscan_cpu.o\t" in line for line in log.splitlines()) == 1, log


@pytest.mark.slow  # builds the native scan
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("horizontal,reverse", DIRECTIONS)
def test_cuda_kernels_match_reference(native, horizontal, reverse):
    if not ops.backend_info()["cuda_kernels"]:
        pytest.skip("the extension was built without CUDA (CUDA_HOME not set)")
    for shape in [(2, 3, 5, 7), (1, 1, 1, 1), (2, 16, 67, 129)]:
        x, g = _inputs(shape)
        h = native.scan(x.cuda(), g.cuda(), horizontal, reverse).cpu()
        assert torch.equal(h, reference.scan_forward(x, g, horizontal, reverse))
        grad = torch.randn(shape)
        got = native.scan_backward(grad.cuda(), g.cuda(), x.cuda(), h.cuda(), horizontal, reverse)
        want = reference.scan_backward(grad, g, x, h, horizontal, reverse)
        assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])


@pytest.mark.slow  # compiles the CUDA source
def test_cuda_source_compiles_with_nvcc(tmp_path):
    # No GPU is needed to compile: the .cu must build against this torch's headers (a CPU wheel ships
    # ATen/c10 core headers but not c10/cuda's generated config header, which scan_cuda.cu avoids).
    import shutil

    from torch.utils import cpp_extension

    nvcc = shutil.which("nvcc") or (cpp_extension.CUDA_HOME and os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
    if not nvcc or not os.path.exists(nvcc):
        pytest.skip("nvcc is not installed (no CUDA toolkit): cannot compile scan_cuda.cu here")
    cmd = [nvcc, "-c", str(ops.CSRC / "scan_cuda.cu"), "-o", str(tmp_path / "scan_cuda.o"), "-std=c++20"]
    cmd += [f"-I{ops.CSRC}"] + [a for p in cpp_extension.include_paths() for a in ("-isystem", p)]
    cmd += ["-DTORCH_API_INCLUDE_EXTENSION_H", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__"]
    cmd += ["-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr"]
    cmd += ops._CUDA_CFLAGS + ["-Xcompiler", "-fPIC"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    symbols = (tmp_path / "scan_cuda.o").read_bytes()
    for kernel in (b"forward_vertical", b"backward_vertical", b"forward_horizontal", b"backward_horizontal"):
        assert kernel in symbols
