"""The captured OpenSIPS 4.0.1 usrloc packets as typed messages, for the tests."""

from __future__ import annotations

from vectors import VECTORS

from binif import STREAM, PacketReader
from binif.location import UsrlocMessage
from binif.opensips40_usrloc import USRLOC_MESSAGES

FOLDER = VECTORS / "opensips-4.0-usrloc"
BY_TYPE = {(cls.MODULE, cls.COMMAND): cls for cls in USRLOC_MESSAGES.values()}


def captured(name: str) -> UsrlocMessage:
    """The typed message of one captured usrloc packet, its clusterer trailer split off."""
    reader = PacketReader.parse((FOLDER / name).read_bytes(), wire=STREAM)
    for _ in range(3):
        _, reader = reader.pop_back_int()
    message = BY_TYPE[(reader.module, reader.command)].from_packet(reader)
    assert isinstance(message, UsrlocMessage)
    return message
