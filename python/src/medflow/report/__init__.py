"""HTML report of a results folder (``medflow report``)."""
