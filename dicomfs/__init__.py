"""dicomfs: a DICOM archive (PACS) mounted as a read-only FUSE filesystem."""

__version__ = "0.1.0"
