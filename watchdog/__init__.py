"""clearml-spot-watchdog: finds ClearML tasks lost with their spot machines and resumes them, exactly once."""

__version__ = "0.1.0"
