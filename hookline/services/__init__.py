"""The control plane's domain logic, shared by the API routes and the CLI.

Plain functions that take a SQLAlchemy session (or, where a step must run outside a
transaction, a sessionmaker) and everything else they need as arguments. They never
commit a caller's session, know nothing of HTTP, and refuse with `services.errors`.
"""
