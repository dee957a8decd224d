"""The DICOM toolkit: building, organising, anonymising and sending datasets."""
