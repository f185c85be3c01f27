"""The package as it is published: its data files, its commands, the built sdist and wheel."""
