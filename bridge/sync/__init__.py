"""The sync core: events and a GHL client in, GHL calls out; the worker loop and the
dry-run preview decide with the same code. No Flask."""
