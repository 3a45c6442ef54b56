"""LoRaWAN 1.0.x PHYPayload parsing: MHDR, join-request and data frames.

Layout (LoRaWAN 1.0.x specification, section 4; multi-byte fields are
little-endian on air):

* ``PHYPayload = MHDR(1) | MACPayload | MIC(4)``; a join-request is
  ``MHDR | JoinEUI(8) | DevEUI(8) | DevNonce(2) | MIC(4)``, 23 bytes.
* ``MHDR`` bits 7..5 are the message type (MType), bits 1..0 the major
  version (0 is LoRaWAN R1).
* A data frame is ``MHDR | DevAddr(4) | FCtrl(1) | FCnt(2) | FOpts(0..15) |
  [FPort(1) | FRMPayload] | MIC(4)``. The low 4 bits of an uplink's FCtrl
  give the FOpts length. FCnt on air is the low 16 bits of the frame counter.

EUIs and DevAddr are returned as lower-case hex in the usual big-endian
reading, the way network servers print them. Nothing here checks the MIC or
decrypts a payload: that needs the session keys.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataFrame", "FrameError", "JoinRequest", "MType", "parse_phy_payload"]


class MType:
    """Message types of MHDR bits 7..5."""

    JOIN_REQUEST = 0
    JOIN_ACCEPT = 1
    UNCONFIRMED_DATA_UP = 2
    UNCONFIRMED_DATA_DOWN = 3
    CONFIRMED_DATA_UP = 4
    CONFIRMED_DATA_DOWN = 5
    REJOIN_REQUEST = 6
    PROPRIETARY = 7

    NAMES = {
        0: "JoinRequest",
        1: "JoinAccept",
        2: "UnconfirmedDataUp",
        3: "UnconfirmedDataDown",
        4: "ConfirmedDataUp",
        5: "ConfirmedDataDown",
        6: "RejoinRequest",
        7: "Proprietary",
    }


_JOIN_REQUEST_LENGTH = 23
_DATA_HEADER_LENGTH = 8  # MHDR, DevAddr, FCtrl, FCnt
_MIC_LENGTH = 4


class FrameError(ValueError):
    """A PHYPayload is too short or inconsistent with its own header."""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A decoded join-request. ``raw`` is the whole PHYPayload, MIC included."""

    join_eui: str
    dev_eui: str
    dev_nonce: int
    mic: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class DataFrame:
    """A decoded data frame.

    Attributes:
        mtype: One of the data message types of :class:`MType`.
        dev_addr: Device address, lower-case hex.
        adr, ack: FCtrl flags.
        fcnt16: The 16 frame-counter bits carried on air.
        fopts: MAC commands piggybacked in FOpts (encrypted in 1.1 only).
        fport: FPort, or None when the frame has no FPort (and no payload).
        frm_payload: The encrypted application payload (MAC commands when
            FPort is 0).
        mic: Message integrity code.
        raw: The whole PHYPayload.
    """

    mtype: int
    dev_addr: str
    adr: bool
    ack: bool
    fcnt16: int
    fopts: bytes
    fport: int | None
    frm_payload: bytes
    mic: bytes
    raw: bytes

    @property
    def uplink(self) -> bool:
        return self.mtype in (MType.UNCONFIRMED_DATA_UP, MType.CONFIRMED_DATA_UP)

    @property
    def confirmed(self) -> bool:
        return self.mtype in (MType.CONFIRMED_DATA_UP, MType.CONFIRMED_DATA_DOWN)

    @property
    def mac_only(self) -> bool:
        """True when the frame carries no application data (FPort 0 or absent)."""
        return self.fport is None or self.fport == 0


def parse_phy_payload(raw: bytes) -> JoinRequest | DataFrame | None:
    """Decode a join-request or a data frame; return None for other message types.

    Raises:
        FrameError: the frame is shorter than its type requires, or its
            FOpts length runs past the MIC.
    """
    if len(raw) < 1:
        raise FrameError("empty PHYPayload")
    mtype = raw[0] >> 5
    if mtype == MType.JOIN_REQUEST:
        return _join_request(raw)
    if MType.UNCONFIRMED_DATA_UP <= mtype <= MType.CONFIRMED_DATA_DOWN:
        return _data_frame(raw, mtype)
    return None


def _join_request(raw: bytes) -> JoinRequest:
    if len(raw) != _JOIN_REQUEST_LENGTH:
        raise FrameError(f"join-request is {len(raw)} bytes, expected {_JOIN_REQUEST_LENGTH}")
    return JoinRequest(
        join_eui=raw[1:9][::-1].hex(),
        dev_eui=raw[9:17][::-1].hex(),
        dev_nonce=int.from_bytes(raw[17:19], "little"),
        mic=raw[19:23],
        raw=raw,
    )


def _data_frame(raw: bytes, mtype: int) -> DataFrame:
    if len(raw) < _DATA_HEADER_LENGTH + _MIC_LENGTH:
        raise FrameError(f"data frame is {len(raw)} bytes, shorter than the 12-byte minimum")
    fctrl = raw[5]
    fopts_length = fctrl & 0x0F
    body_end = len(raw) - _MIC_LENGTH
    fopts_end = _DATA_HEADER_LENGTH + fopts_length
    if fopts_end > body_end:
        raise FrameError(f"FOpts length {fopts_length} runs past the end of a {len(raw)}-byte frame")
    fport: int | None = None
    frm_payload = b""
    if body_end > fopts_end:
        fport = raw[fopts_end]
        frm_payload = raw[fopts_end + 1 : body_end]
    return DataFrame(
        mtype=mtype,
        dev_addr=raw[1:5][::-1].hex(),
        adr=bool(fctrl & 0x80),
        ack=bool(fctrl & 0x20),
        fcnt16=int.from_bytes(raw[6:8], "little"),
        fopts=raw[_DATA_HEADER_LENGTH:fopts_end],
        fport=fport,
        frm_payload=frm_payload,
        mic=raw[body_end:],
        raw=raw,
    )
