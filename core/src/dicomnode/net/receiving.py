"""C-STORE requests read from an established association's P-DATA-TF PDUs and answered, without pynetdicom.

pynetdicom turns each P-DATA-TF PDU into a primitive, runs its state
machine, queues the primitive for the DIMSE provider, which appends the
fragments, decodes the command set with pydicom (validating every UID),
builds a message object, queues it for the association's thread, which
wakes, builds an event, the file meta and a response primitive — about
1 ms of Python per instance, the whole cost of a small image. A
:class:`CStoreLane` does the part of that work a C-STORE needs, on the
thread that reads the PDUs: the presentation data values (PS3.8 9.3.5)
of each P-DATA-TF PDU are taken apart, a C-STORE-RQ command set (PS3.7
9.3.1.1, implicit VR little endian) is read with :mod:`struct`, the
dataset's fragments are appended to one buffer, and once the last one is
in, ``deliver`` is called and its status written back as the C-STORE-RSP,
encoded as pynetdicom encodes it (:func:`~dicomnode.net.pdata.c_store_response_command`).

Everything else stays pynetdicom's: a message whose command set is not a
plain C-STORE-RQ on an accepted presentation context of its SOP class
(a C-ECHO, a C-FIND, a command with an element this module does not
know, a UID that does not look like one, a dataset fragment without a
command) is handed back whole, as the P-DATA-TF bytes it came in, and
pynetdicom reads it as if from the socket. So is every PDU that is not a
P-DATA-TF (release, abort). The adapter decides when the lane sees a PDU
(:func:`dicomnode.net.adapter.take_c_stores`).

Nothing here imports pynetdicom's internals; the limits stay the edge's:
the PDUs are read by the same bounded reader, and a dataset that grows
past ``maximum_dataset_size`` is counted, not kept.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping
from io import BytesIO

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import BaseTag
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from dicomnode.net.pdata import c_store_response_command, pdu_buffers

__all__ = ["MAXIMUM_COMMAND", "CStoreLane", "LaneError", "StoreRequest", "received_file_meta"]

#: a presentation data value item: its length (context ID and control header included), context ID, control
_ITEM = struct.Struct(">IBB")
#: a P-DATA-TF PDU's header: type, reserved, length
_PDU = struct.Struct(">BBI")
#: a command element, implicit VR little endian: group, element, length
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")

#: the command elements a C-STORE-RQ may carry (PS3.7 9.3.1.1); any other makes it pynetdicom's
_GROUP_LENGTH, _SOP_CLASS, _FIELD, _MESSAGE_ID, _PRIORITY, _DATASET_TYPE, _SOP_INSTANCE = (
    0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000)
_MOVE_ORIGINATOR_AE, _MOVE_ORIGINATOR_ID = 0x1030, 0x1031
_C_STORE_RQ = 0x0001
_NO_DATASET = 0x0101
_KNOWN = frozenset({_GROUP_LENGTH, _SOP_CLASS, _FIELD, _MESSAGE_ID, _PRIORITY, _DATASET_TYPE, _SOP_INSTANCE,
                    _MOVE_ORIGINATOR_AE, _MOVE_ORIGINATOR_ID})
_US_ELEMENTS = frozenset({_FIELD, _MESSAGE_ID, _PRIORITY, _DATASET_TYPE, _MOVE_ORIGINATOR_ID})
#: the longest command set taken (a C-STORE-RQ's is under 300 bytes): a peer sending command fragments
#: without end must not grow the node's memory without end
MAXIMUM_COMMAND = 1 << 16
#: what the lane accepts as a UID; anything else is left to pynetdicom's own checks
_UID = re.compile(r"[0-9.]{1,64}")


class LaneError(ConnectionError):
    """The peer broke the protocol inside a C-STORE the lane was receiving: the association must be aborted."""


class StoreRequest:
    """One C-STORE-RQ being received: its command, and its dataset's bytes as they arrive.

    ``dataset`` is None once the bytes passed ``limit`` (they are then
    counted in ``size``, not kept).
    """

    __slots__ = ("context_id", "dataset", "limit", "message_id", "size", "sop_class", "sop_instance",
                 "transfer_syntax")

    def __init__(self, context_id: int, message_id: int, sop_class: str, sop_instance: str, transfer_syntax: str,
                 limit: int) -> None:
        self.context_id = context_id
        self.message_id = message_id
        self.sop_class = sop_class
        self.sop_instance = sop_instance
        self.transfer_syntax = transfer_syntax
        self.limit = limit
        self.dataset: BytesIO | None = BytesIO()
        self.size = 0

    def append(self, fragment: memoryview) -> None:
        self.size += len(fragment)
        if self.dataset is not None:
            if self.size > self.limit:
                self.dataset = None  # thrown away as it arrives; the peer is answered once it is all in
            else:
                self.dataset.write(fragment)


def _uid(value: bytes) -> str | None:
    text = value.rstrip(b"\x00 ").decode("ascii", "replace")
    return text if _UID.fullmatch(text) else None


def _dataset_follows(command: bytes | bytearray) -> bool:
    """Whether a command set announces a dataset (CommandDataSetType is not 0x0101); False when unreadable."""
    offset, size = 0, len(command)
    while size - offset >= 8:
        group, element, length = _ELEMENT.unpack_from(command, offset)
        offset += 8
        if group == 0 and element == _DATASET_TYPE and length == 2 and size - offset >= 2:
            return bool(_US.unpack_from(command, offset)[0] != _NO_DATASET)
        offset += length
    return False


def _c_store(command: bytes | bytearray) -> tuple[int, str, str] | None:
    """(message ID, SOP class, SOP instance) of a plain C-STORE-RQ command set with a dataset, else None."""
    offset, size = 0, len(command)
    values: dict[int, bytes] = {}
    while offset < size:
        if size - offset < 8:
            return None
        group, element, length = _ELEMENT.unpack_from(command, offset)
        offset += 8
        if group != 0 or element not in _KNOWN or length > size - offset:
            return None
        values[element] = bytes(command[offset:offset + length])
        offset += length
    numbers = {}
    for element in _US_ELEMENTS & values.keys():
        if len(values[element]) != 2:
            return None
        numbers[element] = _US.unpack(values[element])[0]
    if (numbers.get(_FIELD) != _C_STORE_RQ or _MESSAGE_ID not in numbers or _PRIORITY not in numbers
            or numbers.get(_DATASET_TYPE, _NO_DATASET) == _NO_DATASET):
        return None
    sop_class = _uid(values.get(_SOP_CLASS, b""))
    sop_instance = _uid(values.get(_SOP_INSTANCE, b""))
    if sop_class is None or sop_instance is None:
        return None
    return numbers[_MESSAGE_ID], sop_class, sop_instance


def _explicit_little(tag: int, vr: str, value: bytes) -> RawDataElement:
    if len(value) % 2:
        value += b"\x00"
    return RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)


def received_file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    """The File Meta Information of a received instance: what pynetdicom's ``Event.file_meta`` gives.

    Made from encoded elements, which pydicom converts when first used (its
    validation of every value on assignment costs more than the rest of
    receiving a small image).
    """
    version = PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    elements: dict[BaseTag, DataElement | RawDataElement] = {
        BaseTag(0x00020001): RawDataElement(BaseTag(0x00020001), "OB", 2, b"\x00\x01", 0, False, True),
        BaseTag(0x00020002): _explicit_little(0x00020002, "UI", sop_class.encode("ascii")),
        BaseTag(0x00020003): _explicit_little(0x00020003, "UI", sop_instance.encode("ascii")),
        BaseTag(0x00020010): _explicit_little(0x00020010, "UI", transfer_syntax.encode("ascii")),
        BaseTag(0x00020012): _explicit_little(0x00020012, "UI", PYNETDICOM_IMPLEMENTATION_UID.encode("ascii")),
        BaseTag(0x00020013): _explicit_little(0x00020013, "SH", version + b" " if len(version) % 2 else version),
    }
    meta = FileMetaDataset(elements)
    meta.set_original_encoding(False, True)
    return meta


class CStoreLane:
    """The C-STORE requests of one established association, taken from its P-DATA-TF PDUs and answered.

    ``contexts`` maps each accepted presentation context ID to its
    (abstract syntax, transfer syntax); ``deliver(request)`` returns the
    status of a complete request, with an ErrorComment for a failure;
    ``write(data)`` sends bytes to the peer; ``peer_maximum_pdu`` is the
    longest PDU the peer accepts (0: no limit).
    """

    def __init__(self, contexts: Mapping[int, tuple[str, str]], deliver: Callable[[StoreRequest], int | tuple[int, str]],
                 write: Callable[[bytes], None], *, limit: int, peer_maximum_pdu: int) -> None:
        self.contexts = dict(contexts)
        self.deliver = deliver
        self.write = write
        self.limit = limit
        self.peer_maximum_pdu = peer_maximum_pdu
        self._request: StoreRequest | None = None
        #: a command set arriving in several fragments: its bytes and the items that carried them
        self._command = bytearray()
        self._command_items: list[bytes] = []
        #: a message of pynetdicom's is passing through, and its dataset has not ended
        self._theirs = False
        #: C-STORE requests answered, and messages handed to pynetdicom
        self.answered = 0
        self.handed_over = 0

    @property
    def busy(self) -> bool:
        """True between the first and the last fragment of a message the lane holds."""
        return self._request is not None or bool(self._command_items)

    def feed(self, body: bytes | bytearray | memoryview) -> bytes | None:
        """Take one P-DATA-TF PDU's body; return a P-DATA-TF PDU for pynetdicom, or None when all was taken.

        Raises :class:`LaneError` when the peer breaks the protocol inside a
        C-STORE being received here.
        """
        view = memoryview(body).cast("B")
        theirs: list[memoryview | bytes] = []
        try:
            if not self._request and not self._command_items and not self._theirs:
                items = self._items(view)
                if items is None:
                    return _PDU.pack(0x04, 0, len(view)) + bytes(view)  # malformed: pynetdicom says why
            else:
                items = self._items(view)
                if items is None:
                    raise LaneError("a P-DATA-TF PDU whose presentation data values do not fit in it")
            for start, end in items:
                self._take(view, start, end, theirs)
            if not theirs:
                return None
            self.handed_over += 1
            payload = b"".join(theirs)
            return _PDU.pack(0x04, 0, len(payload)) + payload
        finally:
            theirs.clear()
            view.release()

    @staticmethod
    def _items(view: memoryview) -> list[tuple[int, int]] | None:
        """(start, end) of each presentation data value item, or None when they do not fill the PDU exactly.

        A P-DATA-TF carries one item or more (PS3.8 9.3.5): an empty one is malformed too.
        """
        items = []
        offset, size = 0, len(view)
        if not size:
            return None
        while offset < size:
            if size - offset < 6:
                return None
            (length,) = struct.unpack_from(">I", view, offset)
            if length < 2 or length > size - offset - 4:
                return None
            items.append((offset, offset + 4 + length))
            offset += 4 + length
        return items

    def _take(self, view: memoryview, start: int, end: int, theirs: list[memoryview | bytes]) -> None:
        _, context_id, control = _ITEM.unpack_from(view, start)
        is_command, last = control & 1, control & 2
        request = self._request
        if request is not None:
            if is_command or context_id != request.context_id:
                raise LaneError(f"a {'command' if is_command else 'dataset'} fragment on presentation context "
                                f"{context_id} inside the dataset of C-STORE message {request.message_id} "
                                f"(context {request.context_id})")
            request.append(view[start + 6:end])
            if last:
                self._request = None
                self._answer(request)
            return
        if self._theirs:
            theirs.append(view[start:end])
            if not is_command and last:
                self._theirs = False
            return
        if not is_command:  # a dataset without a command: pynetdicom's to refuse
            theirs.append(view[start:end])
            return
        if self._command_items and context_id != self._command_items[0][4]:
            raise LaneError(f"a command fragment on presentation context {context_id} continues one begun on "
                            "another")
        if len(self._command) + end - start - 6 > MAXIMUM_COMMAND:
            raise LaneError(f"a command set longer than {MAXIMUM_COMMAND} bytes")
        self._command_items.append(bytes(view[start:end]))  # kept past this PDU: a copy
        self._command += view[start + 6:end]
        if not last:
            return
        command, items = self._command, self._command_items
        self._command, self._command_items = bytearray(), []
        parsed = _c_store(command)
        context = self.contexts.get(context_id)
        if parsed is None or context is None or context[0] != parsed[1]:
            theirs.extend(items)
            self._theirs = _dataset_follows(command)
            return
        message_id, sop_class, sop_instance = parsed
        self._request = StoreRequest(context_id, message_id, sop_class, sop_instance, context[1], self.limit)

    def _answer(self, request: StoreRequest) -> None:
        result = self.deliver(request)
        status, comment = (result, None) if isinstance(result, int) else (int(result[0]), str(result[1]))
        if comment is not None:
            comment = comment[:64].encode("ascii", "replace").decode("ascii")
        command = c_store_response_command(request.sop_class, request.sop_instance, request.message_id, status,
                                           comment)
        self.write(b"".join(pdu_buffers(command, request.context_id, self.peer_maximum_pdu, command=True)))
        self.answered += 1
