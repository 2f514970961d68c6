"""Runtime settings that keep Ray, Prefect, ultralytics and Hugging Face offline and inside
the project's own folders. Applied when ``engine`` is imported, so every entry point (the CLI,
a flow, a Ray worker, a test) runs with them; a value the user already set is kept.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Where fld keeps its own state (caches, settings of the libraries it drives)."""
    return Path(os.environ.get("FLD_HOME", Path.home() / ".fld")).expanduser()


def offline_environment(base: Path) -> dict[str, str]:
    """The variables that stop outbound traffic and keep each library's files under ``base``."""
    return {
        # Hugging Face: never reach the hub; only local folders load.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(base / "huggingface"),
        # ultralytics: no online checks, settings in our folder.
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(base / "ultralytics"),
        # AWS SDKs (S3 through pyarrow): never ask the EC2 metadata service for credentials or region.
        "AWS_EC2_METADATA_DISABLED": "true",
        # Ray: no usage stats.
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
        # Prefect: our own home, no analytics, room for the ephemeral API to start on 2 cores.
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "DO_NOT_TRACK": "1",
        # Matplotlib (reports) and spaCy's caches.
        "MPLCONFIGDIR": str(base / "matplotlib"),
    }


def apply() -> None:
    """Set every offline variable the user has not set already, and make the folders they name
    (Prefect cannot create its database in a folder that does not exist)."""
    for key, value in offline_environment(home()).items():
        os.environ.setdefault(key, value)
    for key in ("PREFECT_HOME", "YOLO_CONFIG_DIR", "HF_HOME", "MPLCONFIGDIR"):
        try:
            Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only home: the library will say what it cannot write
            pass
