import subprocess
import sys

import pytest


@pytest.mark.slow  # spawns a process
def test_import_is_cheap_and_lazy():
    # `import restorekit` must not import torch, the hub client or any architecture.
    code = (
        "import sys, restorekit; heavy = [m for m in ('torch', 'huggingface_hub', 'numpy', 'restorekit.archs', "
        "'requests', 'PIL') if m in sys.modules]; print(heavy, restorekit.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[] "), out


@pytest.mark.slow  # spawns a process
def test_public_names_resolve_lazily():
    import restorekit

    assert set(restorekit.__all__) == {"Restorer", "analyze", "list_models", "model_info", "load_model", "__version__"}
    assert "msrn.sr_x4" in restorekit.list_models()
    # In a fresh process: each public name imports its module only when first used, and is that module's object.
    code = (
        "import sys, restorekit\n"
        "names = [('model_info', 'registry'), ('load_model', 'weights'), ('Restorer', 'restorer'),\n"
        "         ('analyze', 'analysis')]\n"
        "for name, module in names:\n"
        "    module = 'restorekit.' + module\n"
        "    before = module in sys.modules\n"
        "    print(name, before, getattr(restorekit, name) is getattr(sys.modules[module], name))\n"
        "try:\n"
        "    restorekit.Restorerr\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "model_info False True",
        "load_model False True",
        "Restorer False True",
        "analyze False True",
        "module 'restorekit' has no attribute 'Restorerr'",
    ], out


def test_colour_and_png_codec_sit_on_the_ground_floor():
    # color.py needs torch only, png16.py numpy, zlib and Pillow's size limit; neither reaches up into image I/O,
    # and metrics measures with the colour coefficients without importing the file readers.
    code = (
        "import sys, importlib; name = sys.argv[1]; importlib.import_module(name); "
        "print(sorted(m for m in sys.modules if m.startswith('restorekit.') and m != name), "
        "'PIL' in sys.modules, 'torch' in sys.modules)"
    )
    seen = {
        name: subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, check=True).stdout
        for name in ("restorekit.color", "restorekit.png16", "restorekit.metrics")
    }
    assert seen == {
        "restorekit.color": "['restorekit._version', 'restorekit.errors'] False True\n",
        "restorekit.png16": "['restorekit._version', 'restorekit.errors'] True False\n",
        "restorekit.metrics": "['restorekit._version', 'restorekit.color', 'restorekit.errors'] False True\n",
    }, seen
