"""HTTP servers syncd runs itself: the status server."""
