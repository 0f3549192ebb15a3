"""Channels between projects: the ledger of posts, deliveries and refusals (`log.py`), and what
a subscriber's task gets in its worktree and what its agent may post (`delivery.py`)."""
