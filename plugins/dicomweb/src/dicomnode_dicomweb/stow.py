"""One STOW-RS request and what its response says about each instance.

dicomweb-client encodes the request (multipart/related, application/dicom
parts) and sends it. Its ``store_instances`` raises for an HTTP error and
returns the response body only for some media types, so the response itself
is caught with the client's response callback and read here, per instance
(PS3.18 10.5.3): an instance in the ReferencedSOPSequence was stored (a
WarningReason says it was stored with a warning, such as coercion), one in
the FailedSOPSequence was not (FailureReason, a C-STORE status), and one in
neither was not acknowledged. A ``200 OK`` without a body readable per
instance means every instance was stored.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import attrs
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset, validate_file_meta
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnode_dicomweb.connection import WebConnection

__all__ = ["StowClient", "StowResponse", "describe_reason", "part10", "read_response"]

#: FailureReason / WarningReason codes named in log lines (PS3.18 Table 10.5.3-3 / -4)
REASONS = {
    0xA700: "out of resources",
    0xA900: "does not match the SOP class",
    0xC000: "cannot understand",
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA770: "transfer failed",
    0xA771: "SOP class not supported by the server",
    0xA772: "transfer syntax not supported",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}


def describe_reason(code: int | None) -> str:
    """A FailureReason or WarningReason as text: ``0xC000 (cannot understand)``."""
    if code is None:
        return "no reason given"
    name = REASONS.get(code)
    if name is None and 0xA700 <= code <= 0xA7FF:
        name = "out of resources"
    elif name is None and 0xC000 <= code <= 0xCFFF:
        name = "cannot understand"
    return f"0x{code:04X}" + (f" ({name})" if name else "")


@attrs.frozen
class StowResponse:
    """What one STOW-RS request did: per instance, and for the request as a whole.

    ``accepted`` the SOPInstanceUIDs stored, ``warnings`` those stored with a
    WarningReason, ``failed`` those refused, with their FailureReason (None
    when the server gave none), ``http_status`` the response's status (None
    when no response came) and ``error`` why the request as a whole failed.
    """

    accepted: tuple[str, ...] = ()
    warnings: dict[str, int | None] = attrs.field(factory=dict)
    failed: dict[str, int | None] = attrs.field(factory=dict)
    http_status: int | None = None
    error: str | None = None


def part10(dataset: Dataset) -> Dataset:
    """``dataset`` as a complete DICOM file for an application/dicom part: itself, or a shallow copy.

    A dataset read from a file is sent as it is; one built in memory gets a
    file meta (with the SOP class and instance, and the transfer syntax it
    is encoded in) and a preamble on a copy that shares its elements.
    """
    meta = getattr(dataset, "file_meta", None)
    complete = (meta is not None and "TransferSyntaxUID" in meta and "MediaStorageSOPInstanceUID" in meta
                and getattr(dataset, "preamble", None) is not None)
    if complete:
        return dataset
    new_meta = FileMetaDataset(meta) if meta is not None else FileMetaDataset()
    if "TransferSyntaxUID" not in new_meta:
        implicit = getattr(dataset, "original_encoding", (None, None))[0]
        new_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    new_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    new_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    validate_file_meta(new_meta, enforce_standard=True)
    carrier = copy.copy(dataset)
    carrier.file_meta = new_meta
    carrier.preamble = b"\0" * 128
    return carrier


def _uid(item: Dataset) -> str:
    return str(item.get("ReferencedSOPInstanceUID", ""))


def _reason(item: Dataset, keyword: str) -> int | None:
    value = item.get(keyword)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _body(response: Any) -> Dataset | None:
    """The response's JSON dataset, or None when it has none (or it is not JSON)."""
    media = str(response.headers.get("Content-Type", "")).split(";")[0].strip().lower()
    if media not in ("application/dicom+json", "application/json") or not response.content:
        return None
    try:
        payload = json.loads(response.content)
        return Dataset.from_json(payload[0] if isinstance(payload, list) and payload else payload)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def read_response(response: Any, sent: Sequence[str]) -> StowResponse:
    """Read a STOW-RS response (``requests.Response``) about the instances ``sent`` (their UIDs)."""
    status = int(response.status_code)
    body = _body(response)
    if body is None or ("ReferencedSOPSequence" not in body and "FailedSOPSequence" not in body):
        if status == 200:
            return StowResponse(accepted=tuple(sent), http_status=status)
        reason = f"HTTP {status} {response.reason or ''}".strip()
        return StowResponse(http_status=status, error=f"the server answered {reason}")
    accepted, warnings, failed = [], {}, {}
    for item in body.get("ReferencedSOPSequence", None) or []:
        uid = _uid(item)
        accepted.append(uid)
        warning = _reason(item, "WarningReason")
        if warning is not None:
            warnings[uid] = warning
    for item in body.get("FailedSOPSequence", None) or []:
        failed[_uid(item)] = _reason(item, "FailureReason")
    error = None if status < 400 else f"the server answered HTTP {status} {response.reason or ''}".strip()
    wanted = set(sent)
    return StowResponse(accepted=tuple(uid for uid in accepted if uid in wanted),
                        warnings={uid: code for uid, code in warnings.items() if uid in wanted},
                        failed={uid: code for uid, code in failed.items() if uid in wanted},
                        http_status=status, error=error)


class StowClient:
    """Sends STOW-RS requests to one server over one session (kept alive between requests).

    Not thread-safe: one per thread.
    """

    def __init__(self, connection: WebConnection) -> None:
        self.connection = connection
        self._responses: list[Any] = []
        self._client: Any = None

    def _record(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self._responses.append(response)
        return response

    def store(self, items: Sequence[tuple[str, Dataset | bytes]]) -> StowResponse:
        """POST instances in one STOW-RS request; never raises for a network or HTTP failure.

        ``items`` are (SOPInstanceUID, dataset or the bytes of its DICOM file) pairs.
        """
        import requests

        sent = [uid for uid, _ in items]
        if self._client is None:
            try:
                self._client = self.connection.client(callback=self._record)
                self._client.set_chunk_size(_CHUNK)
            except Exception as error:  # a secret's variable is unset
                return StowResponse(error=str(error))
        self._responses.clear()
        try:
            _post(self._client, [item for _, item in items])
        except requests.HTTPError:
            pass  # the response was recorded: read below
        except requests.RequestException as error:
            return StowResponse(error=f"cannot reach {self.connection.host}: {_request_error(error)}")
        if not self._responses:
            return StowResponse(error=f"no response from {self.connection.host}")
        return read_response(self._responses[-1], sent)


#: bytes per write of a chunked request body (dicomweb-client's default, 1 MB, costs a write per MB)
_CHUNK = 16 << 20


def _post(client: Any, items: Sequence[Dataset | bytes]) -> None:
    """One STOW-RS request through dicomweb-client.

    A file already encoded (the bytes of a DICOM file) goes as it is: its
    ``store_instances`` takes only datasets and encodes each again
    (pydicom's dcmwrite, about 6 ms per 512x512 CT slice, more than sending
    it), so encoded instances go through the client's own multipart POST
    (still dicomweb-client's encoding). Where that method is not there (a
    dicomweb-client that changed it), the files are read as datasets and go
    through ``store_instances``.
    """
    post = getattr(client, "_http_post_multipart_application_dicom", None)
    studies_url = getattr(client, "_get_studies_url", None)
    if post is None or studies_url is None or not all(isinstance(item, bytes) for item in items):
        from io import BytesIO

        from pydicom import dcmread

        client.store_instances([part10(item) if isinstance(item, Dataset) else dcmread(BytesIO(item))
                                for item in items])
        return
    from dicomweb_client.web import _Transaction

    post(studies_url(_Transaction.STORE, None), list(items))


def _request_error(error: Exception) -> str:
    """A request error in a line, without the URL's query (which may carry a token)."""
    kind = type(error).__name__
    text = str(error).split("(Caused by", 1)[-1].strip(" )")
    return f"{kind}: {text[:200]}" if text else kind
