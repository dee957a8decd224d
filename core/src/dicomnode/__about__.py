"""The version of the dicomnode core distribution."""

__version__ = "0.1.0"
