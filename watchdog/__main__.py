"""`python -m watchdog` is `clearml-watchdog`."""

import sys

from watchdog.cli import main

sys.exit(main())
