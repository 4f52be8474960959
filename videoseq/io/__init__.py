"""Reading and writing files: video decoding and sampling, atomic writes, crash-isolating process pools.

The bottom of the stack above `videoseq.errors`/`config`: nothing here knows about datasets or models.
"""
