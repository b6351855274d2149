"""One module per kvwatch command; each adds its own subparser."""
