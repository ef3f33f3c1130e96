"""Property-based tests of the public boundaries (hypothesis): generated input, asserting each boundary's promise
(a clear status, never INTERNAL, no hang past the deadline, no run left live), not a specific output."""
