"""`videorft demo` (also `python -m videorft_hf.scripts.demo`): see `videorft_hf.demo`."""

import sys

from videorft_hf.demo import main, make_parser  # noqa: F401  (make_parser(subparsers=None), as every command)

if __name__ == "__main__":
    from videorft_hf.cli import run_command

    sys.exit(run_command(main, sys.argv[1:], "videorft demo"))
