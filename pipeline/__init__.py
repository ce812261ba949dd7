"""The Ray Data annotation job and the tools around its output (`python -m pipeline ...`)."""
