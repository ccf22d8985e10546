"""The base of every part's params (generators, labelers): unknown keys are errors, and a boolean is never
taken for a number.

pydantic's lax mode turns `epochs: true` into 1 (bool is an int in Python); a YAML `true` where a count or
a rate belongs is a mistake, so it is refused naming the key. Full strict mode would also refuse YAML lists
for tuple ranges and strings for paths, which recipes rely on, so only this one coercion is closed here.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _numeric_not_bool(annotation: Any) -> bool:
    """Whether a field typed `annotation` takes an int or float but not a bool."""
    found: set[Any] = set()
    pending = [annotation]
    while pending:
        ann = pending.pop()
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            pending.append(typing.get_args(ann)[0])
        elif origin in (typing.Union, types.UnionType):
            pending += list(typing.get_args(ann))
        else:
            found.add(ann)
    return bool(found & {int, float}) and bool not in found


class PartParams(BaseModel):
    """Base for a registered part's params."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in cls.model_fields \
                and _numeric_not_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value
