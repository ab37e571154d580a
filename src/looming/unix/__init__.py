"""Host implementations of the device interfaces (the ``unix`` target)."""
