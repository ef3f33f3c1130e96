"""gRPC plumbing every service shares: the server bootstrap (server), the one interceptor around every RPC
(interceptor), the one mapping of domain errors to status codes (status), the wire codec for binary and JSON
callers (codec), the one channel factory (channels), the health probe (health_probe), and the conversions between
protos and the shared domain types (protoconv). Domain code never imports from here; servicers and clients do."""
