"""Embedding vectors on the wire: little-endian float32 in base64, as OpenAI's ``encoding_format: base64``
sends them and as jobs carry them back; floats only where a client asked for them."""

from __future__ import annotations

import base64
import math
import sys
from array import array
from collections.abc import Sequence


def pack(vector: Sequence[float]) -> str:
    values = array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def unpack(packed: str) -> list[float]:
    values = array("f")
    values.frombytes(base64.b64decode(packed))
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def shortened(vector: Sequence[float], dimensions: int | None) -> list[float]:
    """The first ``dimensions`` values scaled back to unit length: how models trained for it (Matryoshka,
    OpenAI's text-embedding-3) give shorter embeddings; the vector itself when no length is asked."""
    if dimensions is None or dimensions >= len(vector):
        return list(vector)
    return unit(vector[:dimensions])


def unit(vector: Sequence[float]) -> list[float]:
    """The vector scaled to length 1 (as OpenAI's embeddings are); a zero vector as it is."""
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]
