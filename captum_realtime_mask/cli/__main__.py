"""``python -m captum_realtime_mask.cli``: the same as ``captum-realtime-mask``."""

import sys

from captum_realtime_mask.cli import main

sys.exit(main())
