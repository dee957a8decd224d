"""The contract with pynetdicom: what the adapter patches is still what pynetdicom calls.

If pynetdicom stops calling what the speed patches replace (say, ``dul.py``
imports ``sleep`` from ``time`` itself, or the association reactor polls
every 0.5 ms instead of 1 ms), the patches silently stop working: ingest
gets ~3x slower, or an idle association's CPU ~3x higher, while every
other test still passes. These tests fail then: the start-up check must
name the mismatch, and an association's threads must be seen waiting
through the adapter, not sleeping on their own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from node import wait_until
from pynetdicom import AE

from dicomnode.dicom.synthetic import synthetic_series
from dicomnode.net import adapter
from dicomnode.net.server import DicomServer
from dicomnode.net.sink import Peer, ReceivedInstance

pytestmark = pytest.mark.timeout(60)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Sink:
    def __init__(self) -> None:
        self.received = 0

    def on_instance(self, instance: ReceivedInstance, peer: Peer) -> int:
        self.received += 1
        return 0

    def on_refused(self, peer: Peer, sop_instance_uid: str, size: int, status: int, comment: str) -> None:
        pass

    def on_association_end(self, peer: Peer) -> None:
        pass


@pytest.fixture
def server() -> Iterator[DicomServer]:
    server = DicomServer(ae_title="EDGE", sink=Sink(), ip="127.0.0.1", port=0)
    server.start()
    yield server
    server.close()


def _associate(port: int) -> object:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CT_IMAGE_STORAGE)
    assoc = ae.associate("127.0.0.1", port, ae_title="EDGE")
    assert assoc.is_established
    return assoc


def test_the_start_up_check_finds_everything_the_patches_need() -> None:
    assert adapter.check() == ()


@pytest.mark.parametrize(("name", "words"), [
    ("run_reactor", "does not read through self._is_transport_event()"),
    ("_is_transport_event", "does not read with _read_pdu_data"),
])
def test_the_start_up_check_names_a_dul_the_c_store_lane_could_not_read_through(
        monkeypatch: pytest.MonkeyPatch, name: str, words: str) -> None:
    # the lane reads each PDU in place of DULServiceProvider._is_transport_event: a DUL that reads
    # another way would bypass it (or read around it), so the lane must then stay off
    import pynetdicom.dul

    monkeypatch.setattr(pynetdicom.dul.DULServiceProvider, name, lambda self: False)
    assert [problem for problem in adapter._problems() if words in problem]


def test_an_accepted_association_waits_through_the_adapter_instead_of_polling(server: DicomServer) -> None:
    import pynetdicom.association
    import pynetdicom.dul

    assoc = _associate(server.port)
    try:
        accepted = next(iter(server._live.values())).assoc
        assert accepted in adapter._clock.reactors and accepted.dul in adapter._clock.duls
        assert pynetdicom.dul.time is adapter._clock  # type: ignore[attr-defined]
        assert pynetdicom.association.time is adapter._clock  # type: ignore[attr-defined]
        duls, reactors = adapter._clock.dul_waits, adapter._clock.reactor_waits
        time.sleep(0.3)  # idle: each thread waits in the adapter, up to LONGEST_WAIT at a time
        # a DUL that sleeps on its own (sleep imported by name) never gets here, nor a reactor that
        # sleeps another literal than the adapter expects: both counts then stay where they were
        assert adapter._clock.dul_waits - duls >= 10
        assert adapter._clock.reactor_waits - reactors >= 10
        # ... and waiting costs no latency: a C-STORE is answered at once
        started = time.monotonic()
        for dataset in synthetic_series(slices=5, rows=16, columns=16):
            assert int(assoc.send_c_store(dataset).Status) == 0  # type: ignore[attr-defined]
        assert time.monotonic() - started < 1.0
    finally:
        assoc.release()  # type: ignore[attr-defined]


def test_a_woken_dul_thread_is_woken_by_what_it_is_given_to_send(server: DicomServer) -> None:
    # an idle DUL waits up to LONGEST_WAIT; a queued primitive (here, a C-ECHO request) must end that wait
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", server.port, ae_title="EDGE")
    try:
        assert adapter.wake_on_data(assoc)
        waker = adapter._clock.duls[assoc.dul]
        woken = []
        real_wake = waker.wake
        waker.wake = lambda: (woken.append(True), real_wake())[1]  # type: ignore[method-assign]
        assert int(assoc.send_c_echo().Status) == 0
        assert woken
    finally:
        assoc.release()


def test_other_threads_sleep_as_they_asked_through_the_stand_in_clock() -> None:
    started = time.monotonic()
    adapter._clock.sleep(0.001)
    adapter._clock.sleep(0.02)
    assert time.monotonic() - started >= 0.021
    assert adapter._clock.monotonic() >= started  # everything else is the time module's


def _described(ae: AE) -> list[tuple[object, ...]]:
    return [(cx.abstract_syntax, cx.transfer_syntax, cx.context_id, cx.scu_role, cx.scp_role)
            for cx in ae.supported_contexts]


def _storage_contexts_built_both_ways() -> tuple[AE, AE]:
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts

    # every storage SOP class, one of them twice (pynetdicom then extends the context it has)
    uids = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts] + [CT_IMAGE_STORAGE]
    theirs, ours = AE(), AE()
    for uid in uids:
        theirs.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
    adapter.add_supported_contexts(ours, uids, ALL_TRANSFER_SYNTAXES)
    return theirs, ours


def test_the_contexts_a_node_supports_are_the_ones_pynetdicom_builds() -> None:
    from pydicom.uid import UID

    assert adapter.fast()
    theirs, ours = _storage_contexts_built_both_ways()
    assert _described(ours) == _described(theirs)
    assert len(ours.supported_contexts) > 100
    lists = [cx.transfer_syntax for cx in ours.supported_contexts]
    assert len({id(syntaxes) for syntaxes in lists}) == len(lists)  # each context its own list
    assert all(type(uid) is UID for syntaxes in lists for uid in syntaxes)


def test_without_the_speed_patches_the_contexts_are_built_by_pynetdicom_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapter, "_checked", ["AE._supported_contexts is not a dict"])
    theirs, ours = _storage_contexts_built_both_ways()
    assert _described(ours) == _described(theirs)


def test_the_edge_accepts_a_storage_context_in_any_transfer_syntax_pynetdicom_knows(server: DicomServer) -> None:
    from pynetdicom import ALL_TRANSFER_SYNTAXES

    ae = AE(ae_title="SCANNER")
    mr_image_storage = "1.2.840.10008.5.1.4.1.1.4"
    last = ALL_TRANSFER_SYNTAXES[-1]
    ae.add_requested_context(CT_IMAGE_STORAGE, [last])
    ae.add_requested_context(mr_image_storage, [ALL_TRANSFER_SYNTAXES[1]])
    assoc = ae.associate("127.0.0.1", server.port, ae_title="EDGE")
    try:
        assert assoc.is_established
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        assert accepted == {(CT_IMAGE_STORAGE, last), (mr_image_storage, ALL_TRANSFER_SYNTAXES[1])}
    finally:
        assoc.release()


def test_without_the_speed_patches_the_node_receives_as_plain_pynetdicom(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(adapter, "_checked", None)
    monkeypatch.setattr(adapter, "_problems", lambda: ["Association._run_reactor polls with time.sleep(0.0005)"])
    with caplog.at_level(logging.WARNING, logger="dicomnode.net"):
        sink = Sink()
        server = DicomServer(ae_title="EDGE", sink=sink, ip="127.0.0.1", port=0)
        server.start()
    try:
        assert [r.message for r in caplog.records if "speed patches" in r.message]
        assoc = _associate(server.port)
        accepted = next(iter(server._live.values())).assoc
        assert accepted.dul not in adapter._clock.duls and accepted not in adapter._clock.reactors
        for dataset in synthetic_series(slices=3, rows=16, columns=16):
            assert int(assoc.send_c_store(dataset).Status) == 0  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
        assert wait_until(lambda: sink.received == 3)
    finally:
        server.close()


# --- the memo of accepted UIDs (adapter.remember_uids) ----------------------------------------------


def _outcome(function: object, *args: object, **kwargs: object) -> tuple[str, object, list[str]]:
    """What a set_uid call did: ("value", the UID and its type) or ("error", the message), and its log lines."""
    import pynetdicom.utils

    records: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    catch = Catch(logging.DEBUG)
    pynetdicom.utils.LOGGER.addHandler(catch)
    try:
        value = function(*args, **kwargs)  # type: ignore[operator]
        return "value", (value, type(value)), records
    except (ValueError, TypeError) as error:
        return "error", str(error), records
    finally:
        pynetdicom.utils.LOGGER.removeHandler(catch)


@pytest.mark.parametrize(("value", "flags"), [
    ("1.2.840.10008.1.2.1", {}),
    (b"1.2.840.10008.1.2.1", {}),
    ("1.2.840.10008.5.1.4.1.1.2 ", {}),
    ("1.2.840.10008.1.2.1", {"validate": False}),
    ("1.02.3", {}),  # non-conformant: a warning every time
    ("1.2.abc", {}),  # invalid: an error every time
    ("", {"allow_empty": False}),
    ("", {}),
    (None, {}),
    (None, {"allow_none": False}),
    (b"1.2.\xff", {}),
    ("1." + "2" * 70, {}),
])
def test_the_uid_memo_answers_as_pynetdicoms_set_uid_every_time(value: object, flags: dict[str, bool]) -> None:
    from pydicom.uid import UID
    from pynetdicom import utils

    memo = adapter._UidMemo(utils.set_uid)
    for _ in range(3):  # a second and third call may come from the memo, and must not differ
        assert _outcome(memo, value, "Some UID", **flags) == _outcome(utils.set_uid, value, "Some UID", **flags)
    given = UID("1.2.840.10008.1.2.1")
    assert _outcome(memo, given, "Some UID") == _outcome(utils.set_uid, given, "Some UID")


def test_the_uid_memo_keeps_only_conformant_uids_and_a_bounded_number(monkeypatch: pytest.MonkeyPatch) -> None:
    from pynetdicom import utils

    memo = adapter._UidMemo(utils.set_uid)
    for value in ("1.2.3", b"1.2.3", "1.02.3", "", "1.2.3", "1.2.3"):
        memo(value, "Some UID")
    assert set(memo.known) == {"1.2.3", b"1.2.3"}
    assert memo.hits == 2
    monkeypatch.setattr(adapter, "UID_MEMO_SIZE", 3)
    for number in range(10):
        memo(f"1.2.{number + 4}", "Some UID")
    assert len(memo.known) == 3


def test_the_uid_memo_forgets_when_pynetdicoms_validator_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    from pynetdicom import _config, utils

    memo = adapter._UidMemo(utils.set_uid)
    memo("1.2.3", "Some UID")
    assert "1.2.3" in memo.known

    def refuse_everything(value: object) -> tuple[bool, str]:
        return False, "refused here"

    monkeypatch.setitem(_config.VALIDATORS, "UI", refuse_everything)
    with pytest.raises(ValueError, match="refused here"):
        memo("1.2.3", "Some UID")


def test_associations_take_their_uids_from_the_memo(server: DicomServer) -> None:
    assert adapter._uid_memo is not None  # the server's start installed it
    import pynetdicom.presentation

    assert pynetdicom.presentation.set_uid is adapter._uid_memo
    _associate(server.port).release()  # type: ignore[attr-defined]
    before = adapter._uid_memo.hits
    assoc = _associate(server.port)
    try:
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                    for cx in assoc.accepted_contexts}  # type: ignore[attr-defined]
        assert accepted == {(CT_IMAGE_STORAGE, "1.2.840.10008.1.2")}
    finally:
        assoc.release()  # type: ignore[attr-defined]
    assert adapter._uid_memo.hits > before


def test_the_sop_instance_uids_of_dimse_primitives_do_not_fill_the_memo(server: DicomServer) -> None:
    from pynetdicom.dimse_primitives import C_STORE

    assert adapter._uid_memo is not None
    primitive = C_STORE()
    primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.99999.1"
    primitive.AffectedSOPClassUID = CT_IMAGE_STORAGE
    assert "1.2.826.0.1.3680043.2.1125.99999.1" not in adapter._uid_memo.known


def test_the_start_up_check_names_a_module_that_makes_uids_another_way(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynetdicom.pdu_items

    monkeypatch.setattr(pynetdicom.pdu_items, "set_uid", lambda *args, **kwargs: None)
    assert "pynetdicom.pdu_items does not use pynetdicom.utils.set_uid" in adapter._problems()
