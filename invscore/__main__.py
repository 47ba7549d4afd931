"""``python -m invscore VERB [--flags] [overrides]``: see invscore/cli and docs/cli.md."""
from invscore.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
