import subprocess
import sys


def test_import_is_cheap_and_lazy():
    # `import restorekit` must not import torch, the hub client or any architecture.
    code = (
        "import sys, restorekit; heavy = [m for m in ('torch', 'huggingface_hub', 'numpy', 'restorekit.archs', "
        "'requests', 'PIL') if m in sys.modules]; print(heavy, restorekit.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] "), out


def test_public_names_resolve_lazily():
    import restorekit

    assert set(restorekit.__all__) == {"Restorer", "list_models", "model_info", "load_model", "__version__"}
    assert callable(restorekit.Restorer) and callable(restorekit.load_model)
    assert "msrn.sr_x4" in restorekit.list_models()
