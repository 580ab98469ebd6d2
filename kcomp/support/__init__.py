"""Base-layer helpers that the compiler, runtime and API layers share (tests/test_layering.py).

    files        atomic file writes (write_bytes_atomic, write_text_atomic, check_writable)
    arrays       numeric_array (user data checked to be numbers), load_arrays (x and y from an .npz)
    disk_cache   cache entries on disk that are checked when read

Import the modules themselves; this package imports nothing, so importing one of them runs no
code above the base layer. (Keras's public utilities, to_categorical, pad_sequences, Progbar,
are kcomp.utils.)
"""
