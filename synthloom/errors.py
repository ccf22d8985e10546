"""User-facing errors: each carries one line that says what is wrong and where."""

import os
from contextlib import contextmanager
from pathlib import Path


class SynthloomError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting non-zero."""


class RecipeError(SynthloomError):
    """The recipe file is missing, unreadable or invalid."""


class GeneratorError(SynthloomError):
    """A generator cannot prepare or produce samples (bad asset, bad parameter)."""


class ModelRejectedError(GeneratorError):
    """A model finished training but failed its own check (mode collapse, divergence before any checkpoint):
    the model store keeps nothing of it."""


class LabelerError(SynthloomError):
    """A labeler cannot run on a dataset (bad parameter, missing input column) or labelled nothing."""


class DatasetError(SynthloomError):
    """A dataset on disk is absent, incomplete, corrupt or conflicts with a build."""


class StorageError(DatasetError):
    """An object store cannot be used: unreachable endpoint, rejected credentials, missing bucket, or a
    version another build holds there."""


class ModelError(SynthloomError):
    """A model (feature extractor, classifier, checkpoint) is missing or cannot be loaded."""


class EvaluatorError(SynthloomError, ValueError):
    """An evaluator cannot score a dataset (bad parameter, wrong modality, missing column or reference).
    Also a ValueError: the metric functions raised plain ValueErrors before, and callers catch those."""


class GateError(SynthloomError):
    """A dataset version missed a quality gate."""


class FeatureError(SynthloomError):
    """A column's declared feature does not fit its values (wrong shape, dtype, class, image)."""


@contextmanager
def file_named(path: Path | str):
    """A failed write (a full disk: `[Errno 28] Error writing bytes to file`) raises an OSError that
    names no file; re-raise it naming `path`, so the CLI's line says which output filled up."""
    try:
        yield
    except OSError as error:
        if error.filename is not None:
            raise
        reason = os.strerror(error.errno) if error.errno else (error.strerror or str(error))
        raise OSError(error.errno, reason, str(path)) from error


def describe_validation_error(error, what: str = "key", prefix: str = "") -> list[str]:
    """One line per problem of a pydantic ValidationError, naming the key path (`prefix.a.b`)."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in (prefix.split(".") if prefix else []) + list(item["loc"]))
        if not item["loc"]:  # a check across several keys (a model validator): its message says which
            message = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            lines.append(f"{where}: {message}" if where else message)
            continue
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown {what} '{where}'")
        elif item["type"] == "missing":
            lines.append(f"missing required {what} '{where}'")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{what} '{where}': {message} (got {item.get('input')!r})")
    return lines
