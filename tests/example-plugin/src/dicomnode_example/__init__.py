"""An example third-party dicomnode plugin."""
