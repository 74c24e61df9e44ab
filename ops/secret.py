"""A credential that travels inside picklable work (shards for worker processes) and never shows:
its repr and str are redacted, so it cannot reach logs, run metadata or exceptions by accident."""

from __future__ import annotations

from typing import Optional


class Secret:
    """A credential whose repr and str never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: Optional[str]):
        self._value = value or None

    def get(self) -> Optional[str]:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret(None)"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __getstate__(self):
        return (self._value,)

    def __setstate__(self, state):
        self._value = state[0]
