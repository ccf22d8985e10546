"""What the Prefect UI and the terminal show of a build: the split table and summary artifacts (with the
preview grid inline) and the progress bar."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from synthloom import dataset as ds

# The UI's progress artifact: one update a second cost ~2 % of a build's wall time; every 3 s ~0.7 %.
PROGRESS_SECONDS = 3.0


def publish_artifacts(manifest: dict[str, Any], final: Path, shown: str | None = None) -> None:
    """`shown`: where the version is committed, when not at `final` (a store URL; `final` has the preview)."""
    shown = shown or str(final)
    key = "dataset-" + "".join(c if c.isalnum() else "-" for c in manifest["recipe"]["name"].lower())
    create_table_artifact(table=list(ds.rows_per_split(manifest).values()), key=key + "-splits",
                          description=f"Splits of {shown}")
    create_markdown_artifact(
        markdown=f"**{manifest['recipe']['name']} {manifest['version']}** committed at `{shown}`\n\n"
                 f"{_embedded_preview(final / 'preview.png')}\n\n"
                 f"recipe sha256 `{manifest['recipe_sha256']}`, seed `{manifest['seed']}`",
        key=key + "-summary",
        description="Build summary",
    )


def _embedded_preview(path: Path, width: int = 480) -> str:
    """The preview grid as a data: URI image: the Prefect UI cannot load file:// links."""
    if not path.exists():
        return "(no preview)"
    from PIL import Image

    with Image.open(path) as image:
        image.thumbnail((width, width * 4))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG", optimize=True)
    return f"![preview](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})"


class _NoBar:
    def advance(self) -> None: ...

    def close(self) -> None: ...


class _RichBar:
    def __init__(self, total: int, label: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("shards"), TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()


def progress_bar(enabled: bool, total: int, label: str):
    return _RichBar(total, label) if enabled else _NoBar()
