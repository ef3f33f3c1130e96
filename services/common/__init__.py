"""Code every service shares: settings, logging, errors, the gRPC server bootstrap and the database."""
