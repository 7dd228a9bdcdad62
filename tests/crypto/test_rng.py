"""The one injectable randomness source every sealing function uses."""

from __future__ import annotations

import pytest

from atoma_lab.crypto.rng import draw


def test_draw_uses_the_injected_value_or_the_source() -> None:
    calls: list[int] = []

    def rng(n: int) -> bytes:
        calls.append(n)
        return bytes(range(n))

    assert draw(b"x" * 12, 12, "nonce", rng) == b"x" * 12 and calls == []
    assert draw(None, 16, "salt", rng) == bytes(range(16)) and calls == [16]


@pytest.mark.parametrize("value", [b"short", b"x" * 13, bytearray(12), "x" * 12])
def test_draw_refuses_a_value_of_the_wrong_size_or_type(value: object) -> None:
    with pytest.raises(ValueError, match="nonce must be 12 bytes"):
        draw(value, 12, "nonce", lambda n: bytes(n))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="salt must be 16 bytes"):
        draw(None, 16, "salt", lambda n: bytes(n - 1))
