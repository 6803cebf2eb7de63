"""The base of our own strict models and the small constrained string types they share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints


class CanonicalModel(BaseModel):
    """Strict base for the hub's own messages: unknown fields are refused, inputs never echoed."""

    # hide_input_in_errors: a ValidationError would otherwise print the offending value, which
    # may be a BSN or a name.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
]
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=40, pattern=r"^[0-9 +()\-]{4,40}$")
]
