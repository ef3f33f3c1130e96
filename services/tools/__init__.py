"""The tools service: discovers tool plugins, keeps their settings, validates arguments and runs them."""
