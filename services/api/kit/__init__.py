"""What every resource of the api shares: the envelope and its errors, the gate, who is calling, the
workspace-scoped repository and unit of work, pagination, shared body types, and reading uploads as they
stream in."""
