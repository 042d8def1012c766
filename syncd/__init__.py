"""syncd: keeps incidents and on-call state consistent across paging vendors."""

__version__ = "0.1.0"
