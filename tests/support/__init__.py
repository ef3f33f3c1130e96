"""Helpers shared by the tests: scripted model server, in-process service stacks, grpc-web client."""
