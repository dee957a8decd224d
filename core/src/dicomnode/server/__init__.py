"""The node: a DICOM server that collects, grinds, processes and dispatches."""
