"""A flag of either command also takes the spelling the library's keyword (or the other commands) use for it."""

from restorekit.cli import build_parser as rk_parser
from restorekit.train.cli import build_parser as train_parser


def test_eval_takes_evaluates_keyword_spelling():
    for flag in ("--degrade", "--degradation"):
        args = rk_parser().parse_args(["eval", "identity", "--data", "d", flag, "noise:25"])
        assert args.degrade == "noise:25", flag


def test_export_takes_export_runs_keyword_spelling():
    for flag in ("--eval-degrade", "--eval-degradation"):
        args = train_parser().parse_args(["export", "run", "-o", "rel", flag, "noise:25"])
        assert args.eval_degrade == "noise:25", flag


def test_fit_takes_the_output_flag_of_run_and_export():
    for flag in ("--out", "--output", "-o"):
        args = train_parser().parse_args(["fit", "--preset", "msrn.sr_x2", flag, "runs/x"])
        assert args.out == "runs/x", flag
    assert train_parser().parse_args(["fit"]).out is None  # unset: the config file's or the preset's value
