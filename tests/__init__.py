"""The platform's tests. A package, so shared helpers import as `tests.support...`."""
