"""Stage 1, the API: photos in, verbatim responses out.

Takes photos (checked and refused before paying), calls Skin Analyze Pro (or the local emulator),
and gives out every response archived verbatim under ``STUDY/raw/`` with an envelope beside it.
"""
