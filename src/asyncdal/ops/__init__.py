"""Operations: the ``asyncdal`` command line and the architecture check.

Internal: the command is ``asyncdal`` (see ``asyncdal --help``).
"""
