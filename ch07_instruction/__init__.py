"""Chapter package; its module is generated from the chapter notebook by tools/export.py."""
