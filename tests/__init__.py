"""mbc's test suite (a package, so that ``tests.hub`` is ours, not a dependency's ``tests``)."""
