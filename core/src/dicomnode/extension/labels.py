"""How log lines, errors and the status name a patient: its key, or a pseudonym of it.

A log line names a patient by its key only, never by a value of its datasets.
With ``log_patient_keys = "pseudonym"`` the node's logging configuration
replaces the key, wherever a line names a patient, by :func:`patient_label`:
``P-`` and 12 hex digits of an HMAC of the key with a secret kept in the data
directory. This module sits in the layer plugins import, so a plugin's own
log lines name patients the same way as the node's.
"""

from __future__ import annotations

import hashlib
import hmac
import threading

__all__ = ["PatientLabels", "patient_label", "pseudonym", "set_patient_labels"]


def pseudonym(patient_key: str, secret: bytes) -> str:
    """The pseudonym of a patient key under ``secret``: ``P-`` and 12 hex digits of an HMAC-SHA256."""
    return "P-" + hmac.new(secret, patient_key.encode("utf-8"), hashlib.sha256).hexdigest()[:12]


class PatientLabels:
    """How log lines, errors and the status name a patient: the key, or its pseudonym."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret

    def __call__(self, patient_key: str) -> str:
        if self.secret is None or not patient_key:
            return patient_key
        return pseudonym(patient_key, self.secret)


_labels = PatientLabels()
_labels_lock = threading.Lock()


def patient_label(patient_key: str) -> str:
    """The patient key as log lines and error messages show it: itself, or its pseudonym.

    Process-wide, like the logging configuration that sets it.
    """
    return _labels(patient_key)


def set_patient_labels(labels: PatientLabels) -> None:
    """Make :func:`patient_label` use ``labels`` (:func:`configure_logging` does this)."""
    global _labels
    with _labels_lock:
        _labels = labels
