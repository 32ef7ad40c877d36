"""`videorft demo` (also `python -m videorft_hf.scripts.demo`): see `videorft_hf.demo`."""

import sys

from videorft_hf.demo import main

if __name__ == "__main__":
    sys.exit(main())
