"""User-facing errors: each carries one line that says what is wrong and where."""


class SynthloomError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting non-zero."""


class RecipeError(SynthloomError):
    """The recipe file is missing, unreadable or invalid."""


class GeneratorError(SynthloomError):
    """A generator cannot prepare or produce samples (bad asset, bad parameter)."""


class DatasetError(SynthloomError):
    """A dataset on disk is absent, incomplete, corrupt or conflicts with a build."""


class ModelError(SynthloomError):
    """A model (feature extractor, classifier, checkpoint) is missing or cannot be loaded."""


class FeatureError(SynthloomError):
    """A column's declared feature does not fit its values (wrong shape, dtype, class, image)."""
