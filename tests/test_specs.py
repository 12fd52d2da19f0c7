"""The one spec grammar (restorekit.specs): every spelling accepted before parses as before; ranges; errors."""

import pytest

from restorekit import degrade, filters, methods, specs
from restorekit.errors import InputError
from restorekit.train.data import DegradationSpec

# spec -> (name, parameters), as restorekit.degrade.parse read them before the grammar had its own module.
DEGRADATIONS = {
    "noise:25": ("noise", {"sigma": 25.0}),
    "noise:sigma=25": ("noise", {"sigma": 25.0}),
    " noise:25 ": ("noise", {"sigma": 25.0}),
    "noise:25,": ("noise", {"sigma": 25.0}),
    "noise:25,clip": ("noise", {"sigma": 25.0, "clip": True}),
    "noise:sigma=15,clip": ("noise", {"sigma": 15.0, "clip": True}),
    "noise:clip,sigma=5": ("noise", {"clip": True, "sigma": 5.0}),
    "noise:25,clip=no,quantize=on": ("noise", {"sigma": 25.0, "clip": False, "quantize": True}),
    "noise: 25": ("noise", {"sigma": 25.0}),
    "noise:1e-3": ("noise", {"sigma": 0.001}),
    "jpeg:10": ("jpeg", {"quality": 10}),
    "jpeg:quality=20,subsampling=4:4:4": ("jpeg", {"quality": 20, "subsampling": "4:4:4"}),
    "bicubic:4": ("bicubic", {"scale": 4}),
    "bicubic:4,quantize=0": ("bicubic", {"scale": 4, "quantize": False}),
    "gaussian_blur": ("gaussian_blur", {}),
    "gaussian_blur:1.6": ("gaussian_blur", {"sigma": 1.6}),
    "gaussian_blur:sigma=1.6,size=11,anisotropic=false": (
        "gaussian_blur",
        {"sigma": 1.6, "size": 11, "anisotropic": False},
    ),
    "motion_blur:15": ("motion_blur", {"size": 15}),
    "rain": ("rain", {}),
    "rain:0.005,angle=-10": ("rain", {"density": 0.005, "angle": -10.0}),
    "haze:beta=1.2": ("haze", {"beta": 1.2}),
    "haze:1.2,airlight=0.8": ("haze", {"beta": 1.2, "airlight": 0.8}),
    "mask": ("mask", {"ratio": 0.5}),
    "mask:0.25": ("mask", {"ratio": 0.25}),
    "hints": ("hints", {"ratio": 0.03}),
    "hints:ratio=0.1": ("hints", {"ratio": 0.1}),
}


@pytest.mark.parametrize("spec", DEGRADATIONS)
def test_every_degradation_spelling_parses_as_before(spec):
    name, params = DEGRADATIONS[spec]
    d = degrade.parse(spec)
    assert (d.name, dict(d.params)) == (name, params)
    assert {k: type(v) for k, v in d.params.items()} == {k: type(v) for k, v in params.items()}
    # Training reads the same spelling the same way (no range: nothing drawn).
    t = DegradationSpec(spec)
    assert t.base == d and t.range is None and t.ranges == {}


# Training specs with a range: (the low end that the base holds, the range).
RANGES = {
    "noise:0-55": ("sigma", 0.0, (0.0, 55.0)),
    "noise: 0 - 55": ("sigma", 0.0, (0.0, 55.0)),
    "noise:55-0": ("sigma", 0.0, (0.0, 55.0)),
    "noise:10-70": ("sigma", 10.0, (10.0, 70.0)),
    "noise:0-55,clip": ("sigma", 0.0, (0.0, 55.0)),
    "jpeg:10-40": ("quality", 10, (10.0, 40.0)),
    "jpeg:10.0-40": ("quality", 10, (10.0, 40.0)),
    "gaussian_blur:0.5-2": ("sigma", 0.5, (0.5, 2.0)),
    "rain:0.002-0.01": ("density", 0.002, (0.002, 0.01)),
    "haze:0.5-1.5": ("beta", 0.5, (0.5, 1.5)),
    "noise:sigma=0-55": ("sigma", 0.0, (0.0, 55.0)),  # the keyword spelling of the same range
}


@pytest.mark.parametrize("spec", RANGES)
def test_training_ranges(spec):
    key, low, bounds = RANGES[spec]
    t = DegradationSpec(spec)
    assert t.range == bounds and t.ranges == {key: specs.Range(*bounds)}
    assert t.base.params[key] == low and type(t.base.params[key]) is type(low)
    # Every draw lies in the range, has the parameter's type, and is reproducible from the generator.
    import torch

    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = t.apply(x, torch.Generator().manual_seed(1))
    b = t.apply(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_a_range_draw_is_the_uniform_draw_of_the_generator():
    import torch

    t = DegradationSpec("noise:10-70")
    x = torch.full((1, 1, 32, 32), 0.5)
    gen = torch.Generator().manual_seed(4)
    y = t.apply(x, gen)
    g2 = torch.Generator().manual_seed(4)
    sigma = 10 + 60 * float(torch.rand((), generator=g2))
    assert torch.equal(y, degrade.gaussian_noise(x, sigma, seed=g2).float())


def test_a_ranged_kernel_size_is_always_odd_and_inside_its_range(monkeypatch):
    # motion_blur needs an odd kernel size: a range of sizes draws the odd size nearest each draw, never an even
    # one (which the kernel refuses), and never past the range's ends.
    import torch

    used, kernel = [], degrade.motion_kernel

    def recording(size, **kw):
        used.append(size)
        return kernel(size, **kw)

    monkeypatch.setattr(degrade, "motion_kernel", recording)
    t = DegradationSpec("motion_blur:8-12")
    x = torch.full((1, 1, 32, 32), 0.5)
    for seed in range(40):
        assert t.apply(x, torch.Generator().manual_seed(seed)).shape == x.shape
    assert len(used) == 40 and set(used) == {9, 11}


ERRORS = [
    (degrade.parse, "blurr", "unknown degradation 'blurr'; use one of noise, jpeg"),
    (degrade.parse, "jpeg:q=10", "has no parameter 'q'"),
    (degrade.parse, "jpeg", "needs its quality, e.g. jpeg:10"),
    (degrade.parse, "bicubic:x2", "'x2' is not a valid int"),
    (degrade.parse, "noise:sigma", "'' is not a valid float"),
    (degrade.parse, "noise:25,clip=maybe", "'maybe' is not a valid bool"),
    (degrade.parse, "noise:0-55", r"'0-55' is not a valid float \(a range LOW-HIGH is drawn per sample"),
    (degrade.parse, "mask:1.5", r"fraction of pixels missing, in \[0, 1\]"),
    (DegradationSpec, "bicubic:2-4", r"only noise \(sigma\), jpeg \(quality\).* take a range LOW-HIGH"),
    (DegradationSpec, "mask:0.2-0.5", "take a range LOW-HIGH"),
    (DegradationSpec, "noise:clip=0-5", "take a range LOW-HIGH"),
    (DegradationSpec, "jpeg:10.5-40", "'10.5' is not a valid int"),
    (DegradationSpec, "noise:clip,0-55", "has no parameter '0-55'"),
    (filters.parse_filter, "median:3", "unknown filter 'median'"),
    (filters.parse_filter, "l0smooth:gamma=2", "has no parameter 'gamma'"),
    (filters.parse_filter, "l0smooth:abc", "'abc' is not a valid float"),
    (filters.parse_filter, "l0smooth:0.02,2", "has no parameter '2'"),
    (filters.parse_filter, "l0smooth:0.01-0.05", "is not a valid float"),
    (methods.parse_method, "bicubic:4", "takes no parameters; give it as bicubic"),
    (methods.parse_method, "l0smooth:lam=x", "method l0smooth.lam: 'x' is not a valid float"),
]


@pytest.mark.parametrize(("parse", "spec", "words"), ERRORS, ids=[e[1] for e in ERRORS])
def test_bad_specs_say_what_is_wrong(parse, spec, words):
    with pytest.raises(InputError, match=words):
        parse(spec)


def test_one_grammar_for_degradations_filters_methods_and_training():
    assert degrade.parse_params is specs.parse_params
    f = filters.parse_filter("l0smooth:lam=0.01,kappa=1.5")
    assert (f.lam, f.kappa, f.beta_max) == (0.01, 1.5, 1e5) and filters.parse_filter("l0smooth:0.05").lam == 0.05
    method, params = methods.parse_method("l0smooth:0.02,beta_max=1e4")
    assert method.name == "l0smooth" and params == {"lam": 0.02, "beta_max": 1e4}
    assert methods.METHODS["l0smooth"].params == filters.FILTERS["l0smooth"][2]
    assert specs.parse_range("0-55") == specs.Range(0, 55) and str(specs.Range(0, 55)) == "0-55"
    assert specs.parse_range("-5") is None and specs.parse_range("1e-3") is None


def test_training_config_checks_its_specs_before_any_work():
    from restorekit.train.config import resolve

    cfg = resolve("spatial_rnn.denoise")
    assert cfg.degradations == ["noise:0-55"]
    with pytest.raises(InputError, match="take a range"):
        resolve("spatial_rnn.denoise", overrides={"degradations": ["bicubic:2-4"]})
    with pytest.raises(InputError, match="drawn per sample"):
        resolve("spatial_rnn.denoise", overrides={"val_degradation": "noise:0-55"})
