"""Process-wide defaults set before Prefect or Hugging Face libraries are imported."""

from __future__ import annotations

import os

DEFAULTS = {
    # No model hub or telemetry here: fail fast on a missing model, never phone home.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # A fresh PREFECT_HOME needs > 20 s to migrate the ephemeral server's database.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_defaults(verbose: bool = False) -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        # Run logs (INFO and up) go to the Prefect API, so the UI shows what a build did ...
        for logger in ("FLOW_RUNS", "TASK_RUNS"):
            os.environ.setdefault(f"PREFECT_LOGGING_LOGGERS_PREFECT_{logger}_LEVEL", "INFO")
        # ... while the console stays quiet: the CLI prints a failure as one line itself, and Prefect's
        # console handler would add its traceback.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
