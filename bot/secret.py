"""A value that must never be printed: the appsecret, the Token, the EncodingAESKey, the admin token, the
proxy URL with its password."""

from __future__ import annotations


class Secret:
    """A value that must never be printed. `reveal()` is the only way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __reduce__(self):  # pickling would write the value somewhere: refuse
        raise TypeError("Secret values cannot be pickled")
