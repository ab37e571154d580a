"""Suite-wide pytest set-up."""

# The simulator's plugin is tested with pytester; plugins may only be named
# in the top-level conftest. tests.tiers gives --fast (the fast tier).
pytest_plugins = ["pytester", "tests.tiers"]
