"""Process-wide defaults set before Prefect or Hugging Face libraries are imported."""

from __future__ import annotations

import logging
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
    # synthloom's own log records (GAN epochs, evaluator progress) go to the run's logs in the Prefect UI
    # too: Prefect sends the records of its "extra loggers" to the API while a flow or task runs, and
    # drops them outside a run (a load() in a user's script, say) instead of warning.
    extra = [name.strip() for name in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if name.strip()]
    if "synthloom" not in extra:
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(extra + ["synthloom"])
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    logging.getLogger("synthloom").setLevel(logging.INFO)
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        # Run logs (INFO and up) go to the Prefect API, so the UI shows what a build did ...
        for logger in ("FLOW_RUNS", "TASK_RUNS"):
            os.environ.setdefault(f"PREFECT_LOGGING_LOGGERS_PREFECT_{logger}_LEVEL", "INFO")
        # ... while the console stays quiet: the CLI prints a failure as one line itself, and Prefect's
        # console handler would add its traceback.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
