"""`restorekit` and `restorekit-train` end the same way: one mapping from what a verb raises to an exit code and a
line on stderr (restorekit.errors.run_command), run here in-process through each CLI's main(argv)."""

import pytest

import restorekit.cli as rk_cli
import restorekit.train.cli as train_cli
from restorekit.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    OutputExistsError,
    UnknownModelError,
    WeightsError,
    run_command,
)

# (module, handler replaced in it, argv reaching that handler, program name)
CLIS = [
    (rk_cli, "_info", ["info", "msrn.sr_x2"], "restorekit"),
    (train_cli, "_presets", ["presets", "msrn.sr_x2"], "restorekit-train"),
]
RAISED = [
    (UnknownModelError("Unknown model 'x'. Run `restorekit list`"), EXIT_ERROR),
    (WeightsError("no weights for x; run `restorekit download x`"), EXIT_ERROR),
    (OutputExistsError("out.png already exists; pass --overwrite to replace it"), EXIT_ERROR),
    (ValueError("tile must be positive"), EXIT_ERROR),  # the library's own argument checks
    (FileNotFoundError(2, "No such file or directory", "photo.png"), EXIT_ERROR),
]


def _exit(module, handler, argv, monkeypatch, capsys, exc):
    def raising(args):
        raise exc

    monkeypatch.setattr(module, handler, raising)  # build_parser registers the module's handler by name
    code = module.main(argv)
    out = capsys.readouterr()
    return code, out.err, out.out


@pytest.mark.parametrize(("exc", "want"), RAISED, ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "")
def test_both_commands_map_an_error_to_the_same_code_and_line(exc, want, monkeypatch, capsys):
    seen = []
    for module, handler, argv, prog in CLIS:
        code, err, out = _exit(module, handler, argv, monkeypatch, capsys, exc)
        assert (code, err, out) == (want, f"{prog}: error: {exc}\n", ""), prog
        seen.append((code, err.removeprefix(prog)))
    assert seen[0] == seen[1], "the same error ends both commands the same way"


def test_both_commands_report_an_interrupt_with_130(monkeypatch, capsys):
    for module, handler, argv, prog in CLIS:
        code, err, _ = _exit(module, handler, argv, monkeypatch, capsys, KeyboardInterrupt())
        assert code == EXIT_INTERRUPTED == 130 and err.startswith(f"{prog}: interrupted; ") and "kept" in err, err


def test_real_errors_from_both_commands(tmp_path, capsys):
    # The same error class from a real call of each command: an unknown model name.
    assert rk_cli.main(["info", "msrnn.sr_x4"]) == EXIT_ERROR
    rk_err = capsys.readouterr().err
    assert train_cli.main(["presets", "msrnn.sr_x4"]) == EXIT_ERROR
    train_err = capsys.readouterr().err
    assert rk_err.startswith("restorekit: error: Unknown model 'msrnn.sr_x4'. Did you mean 'msrn.sr_x4'")
    assert rk_err.removeprefix("restorekit") == train_err.removeprefix("restorekit-train")
    # An export error (a RestorekitError subclass) ends restorekit-train with 1, as every other restorekit error.
    assert train_cli.main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == EXIT_ERROR
    assert capsys.readouterr().err.startswith(f"restorekit-train: error: run folder {tmp_path / 'missing'} does not")
    assert not (tmp_path / "out").exists()


def test_success_and_usage_errors(capsys):
    assert rk_cli.main(["info", "msrn.sr_x2"]) == EXIT_OK == 0
    assert train_cli.main(["presets", "msrn.sr_x2"]) == EXIT_OK
    assert capsys.readouterr().err == ""
    for main in (rk_cli.main, train_cli.main):
        with pytest.raises(SystemExit) as usage:
            main(["no-such-verb"])
        assert usage.value.code == EXIT_USAGE == 2
        assert "invalid choice: 'no-such-verb'" in capsys.readouterr().err


def _raise(exc):
    raise exc


def test_run_command_returns_the_verbs_own_code(capsys):
    assert run_command("p", lambda: None) == EXIT_OK
    assert run_command("p", lambda: 1) == EXIT_ERROR  # e.g. `restorekit run` with a failed input
    with pytest.raises(RuntimeError, match="a bug"):  # anything else is a bug: its traceback is kept
        run_command("p", lambda: _raise(RuntimeError("a bug")))
    assert run_command("p", lambda: _raise(KeyboardInterrupt())) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "p: interrupted\n"
