"""Tasks: durable records of agent work, their states, and how they are dispatched."""
