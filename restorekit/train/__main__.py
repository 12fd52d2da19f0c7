"""``python -m restorekit.train`` (the same as the ``restorekit-train`` console script)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
