from __future__ import annotations

import os

# Never read a developer's ~/clearml.conf in tests.
os.environ.setdefault("CLEARML_CONFIG_FILE", "/nonexistent")
