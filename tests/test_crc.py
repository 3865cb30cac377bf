"""The CRC (WIRE.md: OpenSIPS's crc32_uint), checked against crcmod as an independent oracle."""

from __future__ import annotations

import crcmod
from hypothesis import given
from hypothesis import strategies as st

from binif.crc import opensips_crc32

ORACLE = crcmod.mkCrcFun(0x104C11DB7, initCrc=0xFFFFFFFF, rev=True, xorOut=0)


@given(st.binary(max_size=4096))
def test_matches_crcmod(body: bytes) -> None:
    assert opensips_crc32(body) == ORACLE(body)


def test_is_not_plain_zlib_crc32() -> None:
    """OpenSIPS skips the final XOR: the stdlib's value is the complement."""
    import zlib

    body = b"\x06\x00\x00\x00dialog\x03\x00\x00\x00"
    assert opensips_crc32(body) == zlib.crc32(body) ^ 0xFFFFFFFF != zlib.crc32(body)


def test_known_values() -> None:
    assert opensips_crc32(b"") == 0xFFFFFFFF
    assert opensips_crc32(b"123456789") == 0xCBF43926 ^ 0xFFFFFFFF


def test_accepts_memoryview_without_copy() -> None:
    data = b"P4CKxxxx" + b"body bytes"
    assert opensips_crc32(memoryview(data)[8:]) == ORACLE(b"body bytes")
